"""The throughput benchmark: well-formed results at tiny sizes, its files, its closing lines. Never timings."""

import json
import os

import pytest

from benchmarks import _device, throughput
from benchmarks.__main__ import main as cli

CPU = _device.Device(platform="cpu", kind="cpu", count=1, host="test")
TINY_MLP = {"width": 16, "depth": 1, "batch": 4}
TINY_TRANSFORMER = {"batch": 2, "time": 4, "width": 8, "num_heads": 2, "key_dim": 4, "mlp_dim": 16, "classes": 3}
ROW_KEYS = {
    "model", "policy", "ms_per_step", "range_ms", "samples_per_s", "tflops", "ratio_to_float32", "ratio_range",
    "speedup_vs_float32", "mfu", "peak_dtype", "first_call_s",
}  # fmt: skip


def test_run_at_tiny_sizes_gives_a_row_per_model_and_policy():
    result = throughput.run(
        CPU,
        quick=True,
        policies=("float32", "mixed_bfloat16"),
        mlp=TINY_MLP,
        transformer=TINY_TRANSFORMER,
        rounds=1,
        steps=1,
    )
    assert [(row["model"], row["policy"]) for row in result["rows"]] == [
        ("mlp", "float32"),
        ("mlp", "mixed_bfloat16"),
        ("transformer", "float32"),
        ("transformer", "mixed_bfloat16"),
    ]
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert row["ms_per_step"] > 0 and row["samples_per_s"] > 0 and row["tflops"] > 0 and row["first_call_s"] > 0
        assert row["mfu"] is None  # a CPU has no peak entry
    float32_rows = [row for row in result["rows"] if row["policy"] == "float32"]
    assert all(row["ratio_to_float32"] == 1.0 and row["speedup_vs_float32"] == 1.0 for row in float32_rows)
    # The FLOPs are the analytic counts: MLP 16 -> 16 -> 10 on 4 rows, the first input gradient left out.
    assert result["models"]["mlp"]["train_flops"] == 2 * (2 * 4 * 16 * 16) + 3 * (2 * 4 * 16 * 10)
    assert result["models"]["transformer"]["dims"] == TINY_TRANSFORMER
    assert set(result["formulations"]) == {"float32", "mixed_bfloat16"}
    assert "F32_F32_F32" in result["formulations"]["float32"]
    assert result["closing"] and result["closing"][0].startswith("Fastest MLP step on this CPU: ")
    text = throughput.render(result)
    assert "Products (dp.describe_dot):" in text and "unknown" in text


def test_every_policy_trains_the_mlp_float16_with_loss_scaling_and_float8_recipes():
    result = throughput.run(CPU, quick=True, models=("mlp",), mlp=TINY_MLP, rounds=1, steps=2)
    # On a CPU the bf16 policy also runs with its products upcast to float32 (a CPU without AMX).
    assert [row["policy"] for row in result["rows"]] == [
        "float32",
        "mixed_bfloat16",
        "mixed_bfloat16:upcast",
        "mixed_float16",
        "float8_from_mixed_bfloat16",
        "float8_current_from_mixed_bfloat16",
    ]
    assert "converted to float32 for a float32 dot" in result["formulations"]["mixed_bfloat16:upcast"]
    assert os.environ.get("DTYPEPOLICY_CPU_BF16_DOT") is None  # the override is restored after tracing
    assert all(row["ms_per_step"] > 0 for row in result["rows"])
    assert (
        "Projections: E4M3 inputs and kernels, E5M2 output gradients"
        in result["formulations"]["float8_current_from_mixed_bfloat16"]
    )


def test_run_refuses_an_unknown_model():
    with pytest.raises(ValueError, match=r"models must be among \('mlp', 'transformer'\), received 'cnn'"):
        throughput.run(CPU, models=("cnn",))


def test_rows_on_a_known_gpu_report_mfu_against_the_dtype_peak():
    h200 = _device.Device(platform="gpu", kind="NVIDIA H200", count=1, host="test")
    times = {"float32": [10.0, 12.0, 11.0], "mixed_bfloat16": [2.0, 3.0, 2.5]}
    rows = throughput._rows("mlp", 100, 10**12, times, {"float32": 1.0, "mixed_bfloat16": 1.0}, h200)
    f32, bf16 = rows
    # 1e12 FLOPs in 11 ms is 90.9 TFLOP/s; against 66.9 (float32) and, in 2.5 ms, 400 against 989.4 (bf16).
    assert f32["tflops"] == pytest.approx(1 / 0.011 / 1)
    assert f32["mfu"] == pytest.approx(1 / 0.011 / 66.9)
    assert bf16["mfu"] == pytest.approx(400 / 989.4)
    assert bf16["ratio_to_float32"] == pytest.approx(2.5 / 11) and bf16["speedup_vs_float32"] == pytest.approx(4.4)
    # Per-round ratios: 2/10, 3/12, 2.5/11.
    assert bf16["ratio_range"] == pytest.approx([0.2, 0.25])
    assert bf16["samples_per_s"] == pytest.approx(100 / 0.0025)
    unknown = throughput._rows(
        "mlp", 1, 10**9, {"float32": [1.0]}, {"float32": 1.0}, _device.Device("gpu", "L40S", 1, "")
    )
    assert unknown[0]["mfu"] is None


def _synthetic(platform, times, formulations=None, kind="cpu"):
    result = {
        "platform": platform,
        "device_kind": kind,
        "models": {"mlp": {}},
        "formulations": formulations or {},
        "rows": throughput._rows("mlp", 10, 10**9, times, dict.fromkeys(times, 1.0), CPU),
    }
    return throughput.closing_lines(result)


def test_closing_lines_say_plainly_when_bf16_and_float8_are_slower_on_cpu():
    times = {
        "float32": [10.0],
        "mixed_bfloat16": [12.0],
        "float8_from_mixed_bfloat16": [20.0],
    }
    formulations = {"mixed_bfloat16": "BF16_BF16_F32 on cpu: operands rounded to bfloat16, converted to float32"}
    lines = _synthetic("cpu", times, formulations)
    assert lines[0] == "Fastest MLP step on this CPU: float32; every other policy is slower here."
    assert lines[1] == (
        "  Slower than float32 for the MLP: mixed_bfloat16 1.20x the time, float8_from_mixed_bfloat16 2.00x the time."
    )
    assert lines[2].startswith("  Why mixed_bfloat16: this CPU has no fast bf16 units")
    assert lines[3].startswith("  Why float8_from_mixed_bfloat16: float8 is emulated on a CPU")


def test_closing_line_names_the_fastest_policy_and_its_speedup():
    lines = _synthetic("gpu", {"float32": [10.0], "mixed_bfloat16": [4.0], "mixed_float16": [5.0]}, kind="NVIDIA H200")
    assert lines == [
        "Fastest MLP step on this NVIDIA H200: mixed_bfloat16, 2.50x faster than float32 (4 ms against 10 ms per step)."
    ]


def test_closing_line_without_a_float32_row():
    assert _synthetic("cpu", {"mixed_bfloat16": [4.0], "mixed_float16": [5.0]}) == [
        "Fastest MLP step on this CPU: mixed_bfloat16 (no float32 row to compare with)."
    ]


def test_main_writes_json_and_png(tmp_path, capsys):
    tiny = ["--mlp-width", "16", "--mlp-depth", "1", "--mlp-batch", "4", "--rounds", "1", "--steps", "1"]
    code = cli(
        [
            "throughput",
            "--quick",
            "--out",
            str(tmp_path),
            "--models",
            "mlp",
            "--policies",
            "float32,mixed_bfloat16",
            *tiny,
        ]
    )
    assert code == 0
    written = json.loads((tmp_path / "throughput.json").read_text())
    assert written["benchmark"] == "throughput" and written["device"]["platform"] == "cpu"
    assert written["versions"]["jax"] and len(written["rows"]) == 2
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "MLP 1x16 + 10, batch 4" in printed and "throughput.json" in printed and "Fastest MLP step" in printed


def test_width_must_split_into_the_heads(capsys):
    assert cli(["throughput", "--quick", "--models", "transformer", "--width", "10", "--heads", "4"]) == 2
    assert "--width must be a multiple of --heads, received width 10 and 4 heads" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("loads", "cpus", "warned"), [([0.5, 1.8], 2, False), ([1.5, 3.2], 2, True), ([None, None], 2, False)]
)
def test_closing_lines_warn_when_the_machine_was_busy(loads, cpus, warned):
    result = {
        "platform": "cpu",
        "device_kind": "cpu",
        "models": {"mlp": {}},
        "rows": [
            {
                "model": "mlp",
                "policy": "float32",
                "ms_per_step": 2.0,
                "ratio_to_float32": 1.0,
                "speedup_vs_float32": 1.0,
            },
        ],
        "formulations": {},
        "load_average": loads,
        "cpu_count": cpus,
    }
    lines = throughput.closing_lines(result)
    assert any("competed for them" in line for line in lines) == warned
    if warned:
        assert "reached 3.2 on 2 CPUs" in lines[-1]


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (("float32", "mixed_bf17"), r"policies: Cannot parse dtype policy 'mixed_bf17'"),
        (("mixed_bfloat16:fast",), r"policies: 'mixed_bfloat16:fast' names the formulation 'fast'; expected 'native'"),
        ((), r"policies: expected at least one policy name, received none"),
    ],
)
def test_bad_policy_names_are_refused_before_anything_runs(policies, message):
    with pytest.raises(ValueError, match=message):
        throughput.run(CPU, quick=True, models=("mlp",), policies=policies, mlp=TINY_MLP, rounds=1, steps=1)
