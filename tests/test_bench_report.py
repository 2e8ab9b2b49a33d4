"""The main report: its parts run in order, it writes their files, it ends with recommendations, and
it exits non-zero when the precision gate fails. The parts run at tiny sizes here (never timed)."""

import functools
import json

import jax
import pytest

from benchmarks import __main__ as cli
from benchmarks import overhead, precision, report, throughput

TINY = {
    "throughput": {"models": ("mlp",), "policies": ("float32", "mixed_bfloat16"), "mlp": {"width": 16, "depth": 1,
                   "batch": 4}, "rounds": 1, "steps": 1},
    "overhead": {"models": ["mlp"], "policies": ["float32"], "widths": [8, 16, 3], "batch": 4,
                 "dense_shapes": [[2, 8, 8]], "rounds": 1, "steps": 1, "repeats": 1, "calls": 2, "build_rounds": 0,
                 "compile_rounds": 0},
    "precision": {"layers": ["Dense"], "policies": ("float32", "mixed_bfloat16")},
}  # fmt: skip


@pytest.fixture
def tiny_parts(monkeypatch):
    calls = []

    def tiny(name, original, device, quick=True, **kwargs):
        calls.append((name, quick, kwargs))
        return original(device, quick, **{**kwargs, **TINY[name]})

    for module in (throughput, overhead, precision):
        name = module.__name__.rsplit(".", 1)[1]
        monkeypatch.setattr(module, "run", functools.partial(tiny, name, module.run))
    return calls


def test_report_runs_each_part_quick_writes_files_and_recommends(tiny_parts, tmp_path, capsys):
    # optax.adam's bias correction raises a Python float to an int32 count: standard promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"):
        code = cli.main(["report", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0
    assert [name for name, _, _ in tiny_parts] == ["throughput", "overhead", "precision"]
    assert all(quick for _, quick, _ in tiny_parts)
    assert tiny_parts[1][2] == {"compare": False}  # Keras and Flax stay out of the short report
    for section in ("== throughput", "== overhead", "== precision", "== recommendations =="):
        assert section in text
    recommendations = text.split("== recommendations ==", 1)[1]
    assert "Fastest MLP step on this CPU" in recommendations
    assert "Precision gate: all" in recommendations and "eager Dense.__call__" in recommendations
    assert "This run is on a CPU" in recommendations
    for name in ("throughput", "overhead", "precision", "report"):
        assert (tmp_path / f"{name}.json").is_file()
    for name in ("throughput", "overhead", "precision"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    combined = json.loads((tmp_path / "report.json").read_text())
    assert set(combined["parts"]) == {"throughput", "overhead", "precision"} and combined["device"]["slug"] == "cpu"


def test_no_arguments_means_the_report(monkeypatch):
    ran = []
    monkeypatch.setattr(report, "main", lambda options: ran.append(options.parts) or 0)
    assert cli.main([]) == 0 and ran == [",".join(report.PARTS)]


def test_report_exits_non_zero_when_the_precision_gate_fails(monkeypatch, tmp_path, capsys):
    original = precision.run

    def strict(device, quick=True, **kwargs):
        result = original(device, quick, **{**kwargs, **TINY["precision"]})
        result["rows"][0]["status"] = "FAIL bound"  # as _gate marks a row past its bound
        return result

    monkeypatch.setattr(precision, "run", strict)
    assert cli.main(["report", "--parts", "precision", "--out", str(tmp_path)]) == 1
    assert "Precision gate: 1 of" in capsys.readouterr().out


@pytest.mark.parametrize("parts", ["speed", "throughput,gemm", ","])
def test_unknown_parts_are_refused_naming_them(parts, capsys):
    with pytest.raises(SystemExit, match=f"--parts: expected a comma-separated subset of throughput, overhead, "
                       f"precision, received '{parts}'"):  # fmt: skip
        cli.main(["report", "--parts", parts])


def test_every_command_has_help(capsys):
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--out" in capsys.readouterr().out
