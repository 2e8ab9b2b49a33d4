"""Documentation that runs: every python block in docs/ and README, every docstring example, the site builds."""

import doctest
import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"])
# Pages without python blocks: the design notes, and the API reference (mkdocstrings directives).
PROSE_ONLY = {"design.md", *(page.relative_to(ROOT / "docs").as_posix() for page in ROOT.glob("docs/reference/*.md"))}
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
MODULES = [
    "dtypepolicy",
    "dtypepolicy._autocast",
    "dtypepolicy._defaults",
    "dtypepolicy._dtypes",
    "dtypepolicy._parse",
    "dtypepolicy._policy",
    "dtypepolicy._policy_map",
    "dtypepolicy._serialization",
    "dtypepolicy._stateless",
    "dtypepolicy._strict",
    "dtypepolicy._numerics",
    "dtypepolicy._dot_algorithms",
    "dtypepolicy._dot_formulation",
    "layers.initializers",
    "layers.initializers._base",
    "layers.initializers._constant_initializers",
    "layers.initializers._random_initializers",
    "layers.initializers._variance_scaling",
    "layers.regularizers",
    "layers.constraints",
    "layers.activations",
    "layers._registry",
    "layers._random",
    "dtypepolicy._variable",
    "dtypepolicy.float8",
    "dtypepolicy.loss_scale",
    "dtypepolicy.quantization",
    "dtypepolicy.quantization._contraction",
    "dtypepolicy.quantization._float8",
    "dtypepolicy.quantization._int8",
    "dtypepolicy.quantization._max_combine",
    "dtypepolicy.quantization._strategy",
    "layers",
    "layers._base._quantization",
    "layers._base._policy_key_check",
    "layers._builtin._activation",
    "layers._builtin._arguments",
    "layers._builtin._attention",
    "layers._builtin._batch_normalization",
    "layers._builtin._dense",
    "layers._builtin._dropout",
    "layers._builtin._einsum_dense",
    "layers._builtin._embedding",
    "layers._base._input_spec",
    "layers._base._arrays",
    "layers._base._layer",
    "layers._base._layer_serialization",
    "layers._base._metrics",
    "layers._builtin._normalization",
    "layers._builtin._sequential",
    "layers._builtin._softmax",
    "layers._builtin._transformer",
    "layers.ops",
    "layers._keras_ops",
    "layers._keras_nn_ops",
    "layers._keras_core_ops",
    "layers._keras_loss_ops",
    "layers.losses",
    "layers.losses._base",
    "layers.losses._regression",
    "layers.losses._probabilistic",
    "layers.losses._lookup",
    "layers.optimizers",
    "layers.optimizers._base",
    "layers.optimizers._named",
    "layers.optimizers._loss_scale",
    "layers.training._checkpoint",
    "layers.training._layer_checkpoint",
    "layers.training._train_step",
    "layers.training._fit",
    "layers.distribution._mesh",
    "layers.distribution._layout_map",
    "layers.distribution._distributions",
    "layers.distribution._state",
    "layers.distribution._step",
]


def _page_id(page: pathlib.Path) -> str:
    return page.relative_to(ROOT / "docs").as_posix() if page.parent != ROOT else page.name


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_blocks_in_docs_run(page):
    blocks = BLOCK.findall(page.read_text())
    assert blocks or _page_id(page) in PROSE_ONLY, f"{_page_id(page)} has no python example"
    # A Layer class a page defines stays findable by name in this process (configs are read back
    # by class name), so pages name theirs apart from the test modules' ("Linear" is taken).
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})
        dp.set_dtype_policy(None)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    globs = {"jnp": jnp, "np": np, "dp": dp, **{key: getattr(dp, key) for key in dp.__all__}}
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def _public_objects():
    for name in dp.__all__:
        obj = getattr(dp, name)
        yield f"dp.{name}", obj
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    yield f"dp.{name}.{attr}", member
    for name in layers.__all__:
        obj = getattr(layers, name)
        if isinstance(obj, type):
            yield f"layers.{name}", obj
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    yield f"layers.{name}.{attr}", member
    for module in (dp.float8, dp.loss_scale, dp.quantization):
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)
    for module in (layers.optimizers, layers.losses, layers.training, layers.distribution):
        for name in module.__all__:
            obj = getattr(module, name)
            yield f"{module.__name__}.{name}", obj
            if isinstance(obj, type):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                        yield f"{module.__name__}.{name}.{attr}", member


@pytest.mark.parametrize(
    ("name", "obj"), list(_public_objects()), ids=lambda value: value if isinstance(value, str) else ""
)
def test_every_public_name_has_a_docstring(name, obj):
    if isinstance(obj, (int, float)):
        pytest.skip("constants are documented in their module")
    target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    assert (getattr(target, "__doc__", None) or "").strip(), f"{name} has no docstring"


# --- every public name has an example --------------------------------------------------------------

# The public modules: the two packages and every module they export (layers.ops has no __all__:
# its own names are the keras.ops ones, the rest are jax.numpy's, documented by JAX).
PUBLIC_MODULES = [
    "dtypepolicy",
    "dtypepolicy.float8",
    "dtypepolicy.loss_scale",
    "dtypepolicy.quantization",
    "layers",
    "layers.activations",
    "layers.constraints",
    "layers.initializers",
    "layers.ops",
    "layers.regularizers",
    "layers.losses",
    "layers.optimizers",
    "layers.training",
    "layers.distribution",
]


def _public_names():
    """(qualified name, object) for each public name defined in this project (not a re-export of JAX's)."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = module.__all__ if hasattr(module, "__all__") else sorted(module._keras_names())  # ops: no __all__
        for name in names:
            obj = getattr(module, name)
            if isinstance(obj, (types.ModuleType, int, float, str, tuple)):
                continue  # modules are listed themselves; constants are documented in their module
            defined_in = getattr(obj, "__module__", "") or ""
            if defined_in.split(".")[0] in ("dtypepolicy", "layers"):
                yield f"{module_name}.{name}", obj


def _example_cases():
    for name, obj in _public_names():
        yield pytest.param(name, obj, id=name)


def test_public_names_are_found():
    names = {name for name, _ in _public_names()}
    assert {"dtypepolicy.DTypePolicy", "layers.Dense", "layers.ops.relu", "layers.training.fit"} <= names
    assert "layers.ops.matmul" not in names  # jax.numpy's own, not ours


@pytest.mark.parametrize(("name", "obj"), list(_example_cases()))
def test_every_public_name_has_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc or "```" in doc, f"{name}'s docstring has no example (a >>> line or a code block)"


# --- pages stand on their own ------------------------------------------------------------------

# Documents that are not in the repository (the behaviour contract or "the spec", the seed pages,
# the project's issue tracker) must not be cited: a reader of the site cannot open them.
CITES_MISSING = re.compile(r"(?<!\.)\bspec\b|§|\bseeds/|\bissue\s*#?\d+", re.IGNORECASE)


@pytest.mark.parametrize(
    ("line", "cites"),
    [
        ("as the spec asks", True),
        ("see SPEC §4", True),
        ("the main branch at the end of issue 7", True),
        ("fixed in Issue #12", True),
        ("assert kernel.sharding.spec == P()", False),
        ("a PartitionSpec per array", False),
        ("known issues with float16", False),
    ],
)
def test_cites_missing_catches_the_spec_and_issue_numbers(line, cites):
    assert bool(CITES_MISSING.search(line)) is cites


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_pages_cite_no_document_outside_the_repository(page):
    hits = [line for line in page.read_text().splitlines() if CITES_MISSING.search(line)]
    assert not hits, f"{_page_id(page)} cites a document that is not in the repository: {hits}"


# --- the site builds ---------------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="the docs extra (mkdocs, mkdocstrings) is not installed",
)
def test_site_builds_without_warnings(tmp_path):
    # --strict turns every warning (a broken link or anchor, a page missing from the nav, a
    # docstring griffe cannot read) into a failed build.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "WARNING" not in output, output
    assert (tmp_path / "site" / "reference" / "dtypepolicy" / "index.html").is_file()
