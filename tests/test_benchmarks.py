"""Smoke tests of the benchmarks: correctness of what they compare, never their timings."""

import jax
import numpy as np
import pytest

from benchmarks import train_step


@pytest.mark.parametrize(
    ("model", "policy"), [("mlp", "float32"), ("mlp", "mixed_bfloat16"), ("transformer", "mixed_bfloat16")]
)
def test_train_step_benchmark_variants_compute_the_same_losses(model, policy):
    # optax.adam's own bias correction raises a Python float to an int32 count: standard promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"):
        report = train_step.compare(policy, model, widths=(8, 16, 3), batch=4, rounds=1, steps=1, check_steps=3)
    ours, plain = report["first_losses"]["layers"], report["first_losses"]["plain"]
    assert len(ours) == len(plain) == 3
    # The plain-JAX step is the reference: same losses, and training moves them (a dead step would agree too).
    np.testing.assert_allclose(ours, plain, rtol=1e-4 if policy == "float32" else 2e-2)
    assert plain[-1] < plain[0]
    assert report["ratio"] > 0


def test_train_step_benchmark_machine_sentence_says_how_bf16_dots_compare():
    host = {
        "cpu": "2 CPUs, x86_64",
        "device": "cpu",
        "amx_bf16_flag": False,
        "avx512_bf16_flag": False,
        "bf16_over_f32_matmul": 3.0,
        "load_average": 1.0,
    }
    sentence = train_step.describe_machine(host)
    assert "neither amx_bf16 nor avx512_bf16" in sentence
    assert "3.00x" in sentence and "slower than float32" in sentence


FLOAT8_GEMM_HLO = """
func.func public @main(%arg0: tensor<4x16xf32>, %arg1: tensor<16x8xf32>) -> tensor<4x8xf32> {
    %0 = stablehlo.convert %arg0 : (tensor<4x16xf32>) -> tensor<4x16xf8E4M3FN>
    %1 = stablehlo.convert %0 : (tensor<4x16xf8E4M3FN>) -> tensor<4x16xbf16>
    %2 = stablehlo.multiply %1, %s : tensor<4x16xbf16>
    %3 = stablehlo.convert %arg1 : (tensor<16x8xf32>) -> tensor<16x8xf8E4M3FN>
    %4 = stablehlo.convert %3 : (tensor<16x8xf8E4M3FN>) -> tensor<16x8xbf16>
    %5 = stablehlo.dot_general %2, %4, contracting_dims = [1] x [0] : (tensor<4x16xbf16>, tensor<16x8xbf16>)
    %6 = stablehlo.convert %arg0 : (tensor<4x16xf32>) -> tensor<4x16xbf16>
    %7 = stablehlo.dot_general %6, %4, contracting_dims = [1] x [0] : (tensor<4x16xbf16>, tensor<16x8xbf16>)
    return %5 : tensor<4x8xf32>
}
func.func private @other(%arg0: tensor<4x16xbf16>) -> tensor<4x8xf32> {
    %5 = stablehlo.dot_general %arg0, %arg0, contracting_dims = [1] x [0] : (tensor<4x16xbf16>, tensor<16x8xbf16>)
    return %5 : tensor<4x8xf32>
}
"""


def test_float8_gemm_pattern_counts_dots_whose_two_operands_come_from_float8():
    # %5: both operands dequantized from float8 (one through the scale multiply); %7: one operand
    # is a plain bf16 convert; @other's %5 reuses a name from @main and must not be confused with it.
    from benchmarks.float8_step import fp8_gemm_pattern

    assert fp8_gemm_pattern(FLOAT8_GEMM_HLO) == {"float8_converts": 2, "dots": 3, "dots_fed_by_float8": 1}
