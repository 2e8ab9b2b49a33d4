"""The overhead benchmark: its targets and tables on synthetic figures, the optional libraries, a tiny run."""

import argparse
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _device, overhead, train_step

MISSING_LINE = "Keras/Flax not installed (pip install -e '.[compare]')"


def _step_report(model, policy, ratio, extra=None):
    """A `train_step.compare` report with made-up figures; plain runs 10 ms/step."""
    names = ["layers", "plain", *(extra or {})]
    report = {
        "model": model,
        "shape": [8, 16, 3] if model == "mlp" else train_step.TRANSFORMER,
        "policy": policy,
        "batch": 4,
        "rounds": 3,
        "steps": 2,
        "variants": names,
        "ratio": ratio,
        "ratio_range": [ratio - 0.01, ratio + 0.01],
    }
    times = {"layers": 10.0 * ratio, "plain": 10.0, **{name: 10.0 * r for name, r in (extra or {}).items()}}
    for name, ms in times.items():
        report |= {f"{name}_ms": ms, f"{name}_range_ms": [ms, ms], f"{name}_compile_s": 0.5}
    for name, r in (extra or {}).items():
        report |= {f"ratio_{name}": r, f"ratio_{name}_range": [r, r]}
    return report


def _synthetic(build_s, keras=False):
    extra = {"keras": 1.5, "flax": 1.2} if keras else None
    dense = {"ops_us": 10.0, "layer_us": 14.0, "ratio": 1.4, "math_us": 8.0, "ratio_math": 1.75}
    if keras:
        dense |= {"keras_us": 50.0, "ratio_keras": 5.0, "flax_us": 30.0, "ratio_flax": 3.0}
    result = {
        "quick": True,
        "sizes": {"rounds": 3, "steps": 2, "repeats": 2, "calls": 5, "compile_rounds": 0},
        "libraries": {"keras": "3.0", "flax": "0.12"} if keras else {},
        "missing": None if keras else MISSING_LINE,
        "dots": {"float32": "F32_F32_F32 on cpu: float32 dot."},
        "train_step": [_step_report("mlp", "float32", 1.01, extra), _step_report("transformer", "float32", 1.05)],
        "dense": [
            {"shape": [8, 64, 64], "policy": "float32", "ops_us": 10.0, "layer_us": 12.0, "ratio": 1.2},
            {"shape": [64, 512, 256], "policy": "mixed_bfloat16", **dense},
        ],
        "compile": [
            {
                "model": "mlp",
                "policy": "float32",
                "variant": "layers",
                "trace_s": 0.1,
                "lower_s": 0.1,
                "compile_s": 1.0,
            },
            {"model": "mlp", "policy": "float32", "variant": "plain", "trace_s": 0.1, "lower_s": 0.1, "compile_s": 0.4},
        ],
        "build_s": build_s,
    }
    result["targets"] = overhead.targets(result)
    return result


def test_targets_say_met_at_or_under_each_spec_limit_and_not_met_above():
    result = _synthetic([0.8, 1.2, 0.9])  # median 0.9 s
    verdicts = {(row["target"], row["where"]): (row["measured"], row["limit"], row["met"]) for row in result["targets"]}
    assert verdicts == {
        ("train_step", "MLP 8-16-3 b4 float32"): (1.01, 1.02, "met"),
        ("train_step", "Transformer w128 t32 b4 float32"): (1.05, 1.02, "not met"),
        ("dense_call", "(8,64)->64 float32"): (1.2, 1.3, "met"),
        ("dense_call", "(64,512)->256 mixed_bfloat16"): (1.4, 1.3, "not met"),
        ("build_s", "TransformerBlock(64), fresh process"): (0.9, 1.0, "met"),
    }
    assert overhead.verdict(1.02, 1.02) == "met"  # the limit itself meets "≤"
    assert overhead.summary(result["targets"]) == [
        "jitted train step ≤ 1.02× plain JAX: not met (1/2; worst 1.050×, Transformer w128 t32 b4 float32)",
        "eager Dense.__call__ ≤ 1.3× the jnp ops: not met (1/2; worst 1.400×, (64,512)->256 mixed_bfloat16)",
        "build + first call of TransformerBlock(64) ≤ 1 s: met (1/1; worst 0.90 s, TransformerBlock(64), fresh"
        " process)",
    ]


def test_a_skipped_build_is_not_measured_rather_than_met():
    result = _synthetic([])
    assert result["targets"][-1]["met"] is None
    assert overhead.summary(result["targets"])[-1] == "build + first call of TransformerBlock(64) ≤ 1 s: not measured"
    assert "Build + first call: not measured" in overhead.render(result)


def test_render_puts_keras_and_flax_rows_in_the_same_tables_without_targets():
    text = overhead.render(_synthetic([0.5], keras=True))
    assert MISSING_LINE not in text
    assert "compared with keras 3.0, flax 0.12" in text
    lines = text.splitlines()
    keras_step = next(line for line in lines if line.startswith("MLP") and "Keras 3" in line)
    assert " 1.5 " in keras_step and "met" not in keras_step  # a ratio to plain, no SPEC target
    ours_step = next(line for line in lines if line.startswith("Transformer") and "layers (ours)" in line)
    assert ours_step.rstrip().endswith("≤ 1.02  not met")
    flax_call = next(line for line in lines if line.startswith("(64,512)->256") and "Flax NNX" in line)
    assert flax_call.split()[-2:] == ["30.0", "3"]  # µs/call, × jnp ops; no target
    compile_line = next(line for line in lines if line.startswith("mlp") and "layers (ours)" in line)
    assert compile_line.split()[-1] == "2"  # 1.2 s against plain's 0.6 s


def test_plot_draws_one_png_with_and_without_other_libraries(tmp_path):
    for keras, name in [(True, "with"), (False, "without")]:
        (path,) = overhead.plot(_synthetic([0.5], keras=keras), tmp_path / name)
        assert path == tmp_path / name / "overhead.png" and path.stat().st_size > 0


def test_missing_keras_and_flax_are_named_with_the_install_line(monkeypatch):
    # A None entry in sys.modules makes `import name` raise ImportError, as when it is not installed.
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "flax", None)
    assert overhead.other_libraries() == ({}, MISSING_LINE)
    monkeypatch.setattr(overhead, "_import_keras", lambda: "keras module")
    assert overhead.other_libraries() == ({"keras": "keras module"}, "Flax not installed (pip install -e '.[compare]')")


def test_keras_on_another_backend_counts_as_not_installed(monkeypatch):
    class Backend:
        @staticmethod
        def backend():
            return "torch"

    fake = type(sys)("keras")
    fake.backend = Backend
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(ImportError, match="'torch' backend, not 'jax'"):
        overhead._import_keras()


def test_another_librarys_dense_output_is_checked_against_the_float64_formula():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    kernel = np.linspace(-0.5, 0.5, 8, dtype=np.float32).reshape(4, 2)
    bias = np.array([0.25, -0.5], np.float32)
    exact = x.astype(np.float64) @ kernel + bias
    overhead._check_output("Lib", exact.astype(np.float32), x, kernel, bias, "float32")
    overhead._check_output("Lib", jnp.asarray(exact, jnp.bfloat16), x, kernel, bias, "mixed_bfloat16")
    with pytest.raises(AssertionError, match=r"Lib Dense under float32: relative error .* > 1e-04"):
        overhead._check_output("Lib", exact - bias, x, kernel, bias, "float32")  # the bias left out


def _equations(jaxpr):
    """Every equation of a jaxpr, those of the jaxprs inside its equations (einsum's jit) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                yield from _equations(inner)


def test_plain_float32_baseline_pins_full_float32_precision():
    # JAX's default on GPUs is TF32: a float32 baseline without HIGHEST would not be float32 there.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 128)), jnp.float32)
    _, _, initial = train_step._layers_variant("float32", "transformer", x, train_step.WIDTHS)
    params = {name: jnp.asarray(value) for name, value in initial.items()}
    jaxpr = jax.make_jaxpr(lambda p: train_step._transformer_forward(p, x, jnp.float32))(params)
    dots = [eqn for eqn in _equations(jaxpr.jaxpr) if eqn.primitive.name == "dot_general"]
    assert len(dots) == 9  # query, key, value, scores, context, attention output, MLP in/out, head
    for eqn in dots:
        assert eqn.params["precision"] in (
            (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST),
            jax.lax.Precision.HIGHEST,
        ), eqn


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_plain_mixed_bfloat16_gradient_products_take_bfloat16_operands_as_ours_do(model):
    # JAX's own transpose pairs the float32 cotangent with the bf16 operand: a float32 dot, other
    # numerics and another speed than the layers' bf16 gradient products.
    (x, y), _ = train_step.problem(model, (8, 16, 3), 4)
    for name, (state, step) in train_step.variants("mixed_bfloat16", model, x, (8, 16, 3)).items():
        with jax.numpy_dtype_promotion("standard"):  # optax.adam's float ** int32 count
            text = step.trace(state, (x, y)).lower().as_text()
        operands = re.findall(r"stablehlo\.dot_general.*:\s*\(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)", text)
        assert len(operands) == text.count("stablehlo.dot_general") > 0
        assert set(operands) == {("bf16", "bf16")}, name


def _options(tmp_path, *arguments):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    overhead.add_arguments(parser)
    return parser.parse_args(["--out", str(tmp_path), *arguments])


def test_bad_sizes_are_refused_with_what_was_expected(tmp_path):
    with pytest.raises(SystemExit):
        _options(tmp_path, "--dense-shapes", "8x64")
    with pytest.raises(argparse.ArgumentTypeError, match=r"ROWSxFEATURESxUNITS.*received '8x64'"):
        overhead._shapes("8x64")
    with pytest.raises(argparse.ArgumentTypeError, match="expected some of mlp,transformer, received 'cnn'"):
        overhead._names(overhead.MODELS)("cnn")
    with pytest.raises(TypeError, match=r"unknown sizes \['width'\]"):
        overhead.run(_device.detect(), quick=True, width=3)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, received 0"):
        overhead.run(_device.detect(), quick=True, rounds=0)
    with pytest.raises(ValueError, match="build_rounds must be an integer >= 0, received -1"):
        overhead.run(_device.detect(), quick=True, build_rounds=-1)


def test_main_with_tiny_sizes_writes_json_and_png(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "flax", None)
    options = _options(
        tmp_path, "--quick", "--models", "mlp", "--widths", "8,16,3", "--batch", "4", "--dense-shapes", "4x8x8",
        "--rounds", "1", "--steps", "1", "--repeats", "1", "--calls", "2", "--build-rounds", "0",
    )  # fmt: skip
    # optax.adam's bias correction raises a Python float to an int32 count: standard promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"):
        assert overhead.main(options) == 0
    printed = capsys.readouterr().out
    assert MISSING_LINE in printed and "Keras 3" not in printed
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert (tmp_path / "overhead.png").stat().st_size > 0
    assert result["device"]["platform"] == jax.devices()[0].platform and result["missing"] == MISSING_LINE
    assert [(r["model"], r["policy"], r["variants"]) for r in result["train_step"]] == [
        ("mlp", "float32", ["layers", "plain"]),
        ("mlp", "mixed_bfloat16", ["layers", "plain"]),
    ]
    assert [(d["shape"], d["policy"]) for d in result["dense"]] == [
        ([4, 8, 8], "float32"),
        ([4, 8, 8], "mixed_bfloat16"),
    ]
    assert {(c["variant"], c["samples"]) for c in result["compile"]} == {("layers", 1), ("plain", 1)}
    assert all(c["trace_s"] > 0 and c["lower_s"] > 0 and c["compile_s"] > 0 for c in result["compile"])
    assert [row["target"] for row in result["targets"]] == ["train_step"] * 2 + ["dense_call"] * 2 + ["build_s"]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_keras_and_flax_steps_compute_the_same_losses_as_plain_jax(policy):
    # Runs where the compare extra is installed; the plain-JAX step is the reference, as for ours.
    libraries, _ = overhead.other_libraries()
    if not libraries:
        pytest.skip(MISSING_LINE)
    extra = {
        name: (overhead._keras_step if name == "keras" else overhead._flax_step)(m) for name, m in libraries.items()
    }
    with jax.numpy_dtype_promotion("standard"), overhead._full_precision(policy):
        report = train_step.compare(
            policy, "mlp", widths=(8, 16, 3), batch=4, rounds=1, steps=1, check_steps=3, extra=extra, aot=True
        )
    plain = report["first_losses"]["plain"]
    assert plain[-1] < plain[0]
    for name in libraries:
        np.testing.assert_allclose(report["first_losses"][name], plain, rtol=1e-4 if policy == "float32" else 2e-2)
