"""Training precision: fp32, or bf16 autocast, and what ``auto`` picks where.

``auto`` resolves to bf16 autocast on CUDA and on CPUs with native bf16 arithmetic
(``avx512_bf16`` or AMX), and to fp32 elsewhere: emulated bf16 is slower than fp32. A method
listed in :data:`AUTO_FP32_ON_CPU` stays in fp32 on CPU under ``auto``, with the measured reason.
The resolution happens when a run is planned, so the run key names the precision that runs.

Detection reads the CPU flags of ``/proc/cpuinfo`` (Linux) and asks oneDNN whether it has bf16
kernels; :data:`CPU_BF16_ENV` overrides both (``0`` or ``1``; the test suite sets ``0`` so that
tests behave the same on every machine).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
#: CPU flags (``/proc/cpuinfo``) that mean native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Set to 0 or 1 to override the CPU detection.
CPU_BF16_ENV = "PEFT_BENCH_CPU_BF16"
#: Methods that ``auto`` keeps in fp32 on a CPU with native bf16, and why (measured).
AUTO_FP32_ON_CPU: dict[str, str] = {}


@dataclass(frozen=True)
class CpuBf16:
    """What was detected about this CPU's bf16 support (recorded in every run record)."""

    native: bool = field(metadata={"help": "Whether auto uses bf16 autocast on this CPU."})
    flags: tuple[str, ...] = field(
        default=(), metadata={"help": "The bf16 CPU flags found in /proc/cpuinfo."}
    )
    onednn_bf16: bool | None = field(
        default=None, metadata={"help": "torch's oneDNN reports bf16 support (None: unknown)."}
    )
    source: str = field(default="cpuinfo", metadata={"help": "cpuinfo, or the override."})

    def to_dict(self) -> dict[str, Any]:
        return {
            "native": self.native,
            "flags": list(self.flags),
            "onednn_bf16": self.onednn_bf16,
            "source": self.source,
        }


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags of the first processor listed (empty where unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _onednn_bf16() -> bool | None:
    with contextlib.suppress(Exception):  # private API: absent in some builds
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return None


@functools.cache
def detect_cpu_bf16() -> CpuBf16:
    """This machine's bf16 support: native when a bf16 CPU flag is present (and oneDNN, where
    it answers, agrees), or as :data:`CPU_BF16_ENV` says."""
    override = os.environ.get(CPU_BF16_ENV)
    flags = tuple(sorted(flag for flag in cpu_flags() if flag in BF16_CPU_FLAGS))
    onednn = _onednn_bf16()
    if override is not None:
        if override not in ("0", "1"):
            raise UserError(f"{CPU_BF16_ENV}={override!r}: expected 0 or 1")
        return CpuBf16(override == "1", flags, onednn, f"{CPU_BF16_ENV}={override}")
    return CpuBf16(bool(flags) and onednn is not False, flags, onednn)


def check_precision(value: Any) -> None:
    if value not in PRECISIONS:
        raise UserError(f"precision {value!r} is not one of {', '.join(PRECISIONS)}")


def resolve_precision(requested: str, device: str, method: str, cpu: CpuBf16 | None = None) -> str:
    """``fp32`` or ``bf16``: ``requested`` itself unless it is ``auto`` (module docstring).
    ``cpu``: the detected support (default: this machine's)."""
    check_precision(requested)
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16"
    if method in AUTO_FP32_ON_CPU:
        return "fp32"
    return "bf16" if (cpu or detect_cpu_bf16()).native else "fp32"


def target_device(requested: str | None) -> str:
    """The device runs will use: ``requested``, else cuda when available, else cpu."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(precision: str, device: str) -> Any:
    """The autocast context of a resolved ``precision`` on ``device`` (disabled for fp32)."""
    import torch

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"resolve precision {precision!r} before use (fp32 or bf16)")
    kind = device.split(":")[0]
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def describe(precision: str, device: str) -> dict[str, Any]:
    """The record's ``precision`` entry: what ran and what was detected."""
    info: dict[str, Any] = {"used": precision, "device": device.split(":")[0]}
    if not device.startswith("cuda"):
        info["cpu_bf16"] = detect_cpu_bf16().to_dict()
    return info
