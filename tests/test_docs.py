"""Documentation that runs: every python block in docs/ and README, every docstring example."""

import doctest
import importlib
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
PROSE_ONLY = {"README.md", "design.md"}
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
    "layers",
    "layers._base._quantization",
    "layers._builtin._activation",
    "layers._builtin._arguments",
    "layers._builtin._attention",
    "layers._builtin._batch_normalization",
    "layers._builtin._dense",
    "layers._builtin._dropout",
    "layers._builtin._einsum_dense",
    "layers._builtin._embedding",
    "layers._base._input_spec",
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
]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_blocks_in_docs_run(page):
    blocks = BLOCK.findall(page.read_text())
    assert blocks or page.name in PROSE_ONLY, f"{page.name} has no python example"
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
