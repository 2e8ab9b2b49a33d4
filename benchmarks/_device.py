"""The device a benchmark runs on: its kind, its dense peak throughput per dtype, and MFU.

Peak figures are the vendors' dense (not 2:4 sparse) tensor-core numbers in TFLOP/s, for the SXM
parts where a part comes in several forms. "float32" is the plain float32 (non-tensor-core) rate:
a float32 policy pins full float32 precision, so TF32 is not what it runs.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import jax

# TFLOP/s, dense. Sources: NVIDIA H100/H200 and A100 datasheets, L4 datasheet (sparse figures halved).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4, "float8": 1978.9},
    "H200": {"float32": 66.9, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4, "float8": 1978.9},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "L4": {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0, "float8": 242.0},
}


def peak_entry(device_kind: str) -> str | None:
    """The row of `PEAK_TFLOPS` for a JAX `device_kind` string, or None when it is not in the table.

    >>> peak_entry("NVIDIA H100 80GB HBM3"), peak_entry("NVIDIA L40S"), peak_entry("cpu")
    ('H100 SXM', None, None)
    """
    kind = device_kind.lower().replace("-", " ")
    words = kind.split()
    if "h200" in words and "nvl" not in words:  # the H200 NVL has lower peaks than the SXM part
        return "H200"
    # The SXM H100 reports "H100 80GB HBM3" (or says SXM); PCIe and NVL parts have other peaks.
    if "h100" in words and ("hbm3" in words or "sxm" in kind) and "pcie" not in words and "nvl" not in words:
        return "H100 SXM"
    if "a100" in words or any(word.startswith("a100") for word in words):
        return "A100"
    if "l4" in words:
        return "L4"
    return None


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """Dense peak TFLOP/s of `dtype` ("float32", "bfloat16", "float16", "float8") on that device, or None."""
    entry = peak_entry(device_kind)
    return None if entry is None else PEAK_TFLOPS[entry].get(dtype)


def mfu(achieved_tflops: float, device_kind: str, dtype: str) -> float | None:
    """Model FLOP utilisation: achieved over peak, or None ("unknown") when the peak is not known."""
    peak = peak_tflops(device_kind, dtype)
    return None if peak is None else achieved_tflops / peak


@dataclasses.dataclass(frozen=True)
class Device:
    """What a benchmark needs to know about where it runs."""

    platform: str  # "cpu", "gpu", "tpu"
    kind: str  # jax's device_kind, e.g. "NVIDIA H200" or "cpu"
    count: int
    host: str  # CPU model and core count

    @property
    def accelerated(self) -> bool:
        """True on a GPU or TPU, where benchmark sizes grow to meaningful ones."""
        return self.platform != "cpu"

    @property
    def slug(self) -> str:
        """A file-name form of the kind, used to name per-device baselines: "cpu", "nvidia-h200"."""
        text = "".join(ch if ch.isalnum() else "-" for ch in self.kind.lower())
        return "-".join(part for part in text.split("-") if part) or self.platform

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written into every result file."""
        return {**dataclasses.asdict(self), "slug": self.slug, "peak_entry": peak_entry(self.kind)}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor name where there is none)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return model


def _host() -> str:
    return f"{os.cpu_count()} CPUs, {cpu_model()}"


def detect() -> Device:
    """The first JAX device and the host it runs from."""
    first = jax.devices()[0]
    kind = first.device_kind if first.platform != "cpu" else "cpu"
    return Device(platform=first.platform, kind=kind, count=jax.device_count(), host=_host())


def cpu_flags() -> set[str]:
    """The flags line of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
