"""The device a trial runs on and what it can do natively: the device's choice, bf16 autocast, and
the CPU's name and native bf16 paths (a trial's numbers belong to the CPU that computed them)."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16: autocast; fp32: autocast off, also inside an enclosing bf16 region (the critics may
    run in fp32 within the VAE's bf16 step)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def auto_precision(fast: str, device: torch.device) -> str:
    """A measured fast path `fast` where the device runs it natively: bf16 falls back to fp32."""
    return "fp32" if fast == "bf16" and not bf16_native(device) else fast


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 runs in hardware. A CPU without AVX512-BF16/AMX emulates it: on an AVX2-only
    EPYC the "fast" bf16 step measured 3-4x slower than fp32 (BENCHMARKS.md section 1)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(p is not None and p() for p in probes)
    return False


def cpu_model() -> str:
    """The CPU's name: 'model name' in /proc/cpuinfo, else what platform knows. The bf16 kernels
    differ between CPUs (AMX on the Xeon, AVX512-BF16 on the EPYC of BENCHMARKS.md, emulation
    elsewhere) and so do their roundings: a trial's numbers belong to the CPU that computed them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_bf16_features() -> str:
    """The native bf16 paths of this CPU that bf16_native probes ("avx512_bf16,amx_tile", one of
    them, or "none"): whether bf16 ran in hardware, with AMX's own kernels, or not at all."""
    names = ("avx512_bf16", "amx_tile")
    probes = [getattr(torch.cpu, f"_is_{n}_supported", None) for n in names]
    found = [n for n, p in zip(names, probes) if p is not None and p()]
    return ",".join(found) or "none"
