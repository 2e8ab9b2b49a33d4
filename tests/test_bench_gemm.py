"""The GEMM benchmark: each variant computes the product it names, well-formed results, its files. Never timings."""

import json

import numpy as np
import pytest

from benchmarks import _device, _flops, gemm
from benchmarks.__main__ import main as cli

CPU = _device.Device(platform="cpu", kind="cpu", count=1, host="test")
ROW_KEYS = {
    "product", "pass", "m", "k", "n", "flops", "variant", "ms", "range_ms", "tflops", "mfu", "ratio_to_float32",
    "first_call_s", "float8_gemm", "repeats",
}  # fmt: skip


def _relative_error(value, exact):
    return float(np.linalg.norm(np.asarray(value, np.float64) - exact) / np.linalg.norm(exact))


@pytest.mark.parametrize("which", gemm.PASSES)
def test_every_variant_computes_its_pass_of_the_projection(which):
    # tokens 32, in 16, out 24: the pass's product against float64 NumPy on the same (unrounded) data.
    product = _flops.Product("p", 32, 16, 24)
    arguments = gemm._operands(product, which, gemm.VARIANTS, seed=0)
    a, b = (np.asarray(value, np.float64) for value in arguments["float32"])
    exact = np.einsum(gemm.EQUATIONS[which], a, b)
    assert exact.shape == {"fwd": (32, 24), "dgrad": (32, 16), "wgrad": (16, 24)}[which]
    functions = gemm._functions(which)
    # float32 full precision; 16-bit operands (8 and 11 significant bits); float8 (E4M3 3 bits, E5M2 2 bits).
    bounds = {"float32": 1e-6, "bfloat16": 1e-2, "float16": 2e-3, "float8": 0.1, "float8 + quantize": 0.1}
    for variant, bound in bounds.items():
        value = functions[variant](*arguments[variant])
        assert value.shape == exact.shape
        assert _relative_error(value, exact) < bound, variant
    # The two float8 variants round the same operands with the same scales: the same values.
    np.testing.assert_allclose(
        np.asarray(functions["float8"](*arguments["float8"]), np.float32),
        np.asarray(functions["float8 + quantize"](*arguments["float8 + quantize"]), np.float32),
        rtol=1e-2,
        atol=1e-6,
    )


def test_float8_operands_are_e4m3_for_inputs_and_kernels_and_e5m2_for_gradients():
    product = _flops.Product("p", 8, 4, 6)
    dtypes = {which: [str(x.dtype) for x in gemm._operands(product, which, ("float8",), 0)["float8"][::2]]
              for which in gemm.PASSES}  # fmt: skip
    assert dtypes == {
        "fwd": ["float8_e4m3fn", "float8_e4m3fn"],
        "dgrad": ["float8_e5m2", "float8_e4m3fn"],
        "wgrad": ["float8_e4m3fn", "float8_e5m2"],
    }


def test_pass_shapes_written_out():
    product = _flops.Product("ffn_up", 8, 4, 16)
    assert [gemm.pass_shape(product, which) for which in gemm.PASSES] == [(8, 4, 16), (8, 16, 4), (4, 8, 16)]


def test_run_at_tiny_sizes_gives_a_well_formed_row_per_product_pass_and_variant():
    # FFN = hidden: attention-out and both FFN products share their shapes, so fewer compiles.
    variants = ("float32", "bfloat16", "float8 + quantize")
    result = gemm.run(CPU, quick=True, variants=variants, tokens=8, hidden=4, ffn=4, rounds=1, repeats=1)
    assert len(result["rows"]) == 4 * 3 * len(variants)
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert row["ms"] > 0 and row["tflops"] > 0 and row["first_call_s"] > 0
        assert row["flops"] == 2 * row["m"] * row["k"] * row["n"]
        assert row["mfu"] is None and row["float8_gemm"] is None  # a CPU: no peak, no cuBLASLt
        if row["variant"] == "float32":
            assert row["ratio_to_float32"] == 1.0
    qkv = [row for row in result["rows"] if row["product"] == "qkv" and row["variant"] == "float32"]
    # tokens 8, hidden 4, QKV out 12: every pass is 2*8*4*12 = 768 FLOPs.
    assert [(row["pass"], row["m"], row["k"], row["n"], row["flops"]) for row in qkv] == [
        ("fwd", 8, 4, 12, 768),
        ("dgrad", 8, 12, 4, 768),
        ("wgrad", 4, 8, 12, 768),
    ]
    summary = {entry["variant"]: entry for entry in result["summary"]}
    assert summary["float32"]["ratio_to_float32"] == 1.0 and summary["float32"]["mfu"] is None
    assert summary["bfloat16"]["ms"] == pytest.approx(
        sum(row["ms"] for row in result["rows"] if row["variant"] == "bfloat16")
    )
    text = gemm.render(result)
    assert "ms per product" in text and "The layer's products together" in text and "float8 is emulated" in text


def test_on_a_gpu_of_the_peak_table_rows_carry_mfu_and_whether_float8_became_a_cublaslt_matmul():
    # Run here on the CPU but described as an H200: the peak lookup and the compiled-program check
    # run (a CPU program has no cuBLASLt call, so the answer is False, never None).
    h200 = _device.Device(platform="gpu", kind="NVIDIA H200", count=1, host="test")
    result = gemm.run(h200, variants=("float32", "float8"), tokens=8, hidden=4, ffn=4, rounds=1, repeats=1)
    for row in result["rows"]:
        peak = 66.9 if row["variant"] == "float32" else 1978.9
        assert row["mfu"] == pytest.approx(row["tflops"] / peak)
        assert row["float8_gemm"] is (False if row["variant"] == "float8" else None)
    assert "float8 cuBLASLt matmuls in the compiled programs: 0 of 12 float8 rows." in gemm.render(result)


def test_run_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match=r"variants must be among .*, received 'int8'"):
        gemm.run(CPU, variants=("float32", "int8"))


def _closing(platform, totals):
    summary = [
        {"variant": name, "ms": ms, "tflops": 1.0, "mfu": None, "ratio_to_float32": ms / totals["float32"]}
        for name, ms in totals.items()
    ]
    return gemm.closing_lines({"platform": platform, "device_kind": "NVIDIA H200", "summary": summary})


def test_closing_lines_name_the_fastest_variant_and_the_quantization_cost():
    lines = _closing("gpu", {"float32": 1500.0, "bfloat16": 150.0, "float8": 75.0, "float8 + quantize": 90.0})
    assert lines == [  # times of 1000 ms and more without an exponent
        "Fastest products on this NVIDIA H200: float8, 20.00x faster than float32 over the layer's 12 products "
        "(75 ms against 1500 ms).",
        "  Quantizing the operands (amax, scale, cast) adds 20% to the float8 products.",
    ]


def test_closing_lines_on_cpu_say_float32_is_fastest_and_float8_is_emulated():
    lines = _closing("cpu", {"float32": 10.0, "bfloat16": 12.0, "float8": 20.0})
    assert lines[0] == "Fastest products on this CPU: float32; every other variant is slower here."
    assert lines[1].startswith("  float8 is emulated on a CPU")


def test_main_writes_json_and_png(tmp_path, capsys):
    tiny = ["--tokens", "8", "--hidden", "4", "--ffn", "4", "--rounds", "1", "--repeats", "1"]
    assert cli(["gemm", "--quick", "--out", str(tmp_path), "--variants", "float32,float8 + quantize", *tiny]) == 0
    written = json.loads((tmp_path / "gemm.json").read_text())
    assert written["benchmark"] == "gemm" and written["sizes"] == {"tokens": 8, "hidden": 4, "ffn": 4}
    assert written["device"]["platform"] == "cpu" and len(written["rows"]) == 12 * 2
    assert (tmp_path / "gemm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gemm.json" in capsys.readouterr().out
