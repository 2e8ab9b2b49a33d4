"""The shared result helpers: the text table, JSON files and PNGs."""

import json

import numpy as np

from benchmarks import _device, _results


def test_table_pads_columns_and_right_aligns_numbers():
    text = _results.table(["name", "ms"], [["a", 1.5], ["long name", 12.25], ["none", None]])
    lines = text.splitlines()
    assert lines[0] == "name         ms"  # "name" padded to 9, two spaces, "ms" right-aligned in 4
    assert lines[1] == "---------  ----"
    assert lines[2] == "a           1.5"
    assert lines[3] == "long name  12.2"
    assert lines[4] == "none          -"
    assert all(line == line.rstrip() for line in lines)


def test_small_and_large_numbers_use_exponents():
    text = _results.table(["x"], [[1.25e-7], [3.0e6], [0.0]])
    assert "1.25e-07" in text and "3.00e+06" in text and text.splitlines()[-1].strip() == "0"


def test_write_json_converts_arrays_and_records_the_environment(tmp_path):
    device = _device.Device(platform="cpu", kind="cpu", count=1, host="test host")
    payload = {**_results.environment(device), "values": np.arange(3), "scalar": np.float32(2.5)}
    path = _results.write_json(tmp_path / "out", "thing", payload)
    loaded = json.loads(path.read_text())
    assert path.name == "thing.json" and loaded["values"] == [0, 1, 2] and loaded["scalar"] == 2.5
    assert loaded["device"]["host"] == "test host" and "jax" in loaded["versions"] and loaded["date"]


def test_save_figure_writes_a_png(tmp_path):
    plt = _results.pyplot()
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = _results.save_figure(figure, tmp_path, "plot")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_silent_off_a_terminal():
    with _results.progress("work", 2) as bar:
        bar.advance()
        bar.advance("done")
