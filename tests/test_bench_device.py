"""The device description, the dense peak table and MFU of the benchmarks."""

import pytest

from benchmarks import _device


@pytest.mark.parametrize(
    ("device_kind", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),  # what an H100 SXM reports
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("NVIDIA H100 PCIe", None),  # another part, other peaks: not claimed
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", None),  # lower peaks than the SXM H200
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", None),  # not an L4
        ("TPU v5 lite", None),
        ("cpu", None),
    ],
)
def test_peak_entry_maps_jax_device_kinds_to_table_rows(device_kind, entry):
    assert _device.peak_entry(device_kind) == entry


def test_peaks_are_the_dense_datasheet_figures():
    # Dense (not 2:4 sparse) TFLOP/s from the vendors' datasheets, written out here independently.
    assert _device.peak_tflops("NVIDIA H200", "bfloat16") == pytest.approx(989.4)
    assert _device.peak_tflops("NVIDIA H100 80GB HBM3", "float8") == pytest.approx(1978.9)
    assert _device.peak_tflops("NVIDIA A100-SXM4-40GB", "float16") == pytest.approx(312.0)
    assert _device.peak_tflops("NVIDIA L4", "float32") == pytest.approx(30.3)
    assert _device.peak_tflops("NVIDIA A100-SXM4-40GB", "float8") is None  # no float8 units


def test_mfu_is_achieved_over_peak_and_unknown_off_the_table():
    assert _device.mfu(494.7, "NVIDIA H200", "bfloat16") == pytest.approx(0.5, rel=1e-3)
    assert _device.mfu(100.0, "NVIDIA GeForce RTX 4090", "bfloat16") is None
    assert _device.mfu(0.5, "cpu", "float32") is None


def test_device_slug_names_baseline_files():
    gpu = _device.Device(platform="gpu", kind="NVIDIA H200", count=8, host="h")
    cpu = _device.Device(platform="cpu", kind="cpu", count=1, host="h")
    assert gpu.slug == "nvidia-h200" and gpu.accelerated
    assert cpu.slug == "cpu" and not cpu.accelerated
    assert gpu.as_dict()["peak_entry"] == "H200" and cpu.as_dict()["peak_entry"] is None


def test_detect_describes_this_process_device():
    device = _device.detect()
    assert device.platform == "cpu" and device.kind == "cpu" and device.count >= 1
    assert "CPUs" in device.host
