"""The benchmark's precision modes, decided with :mod:`util.precision` (no second implementation).

``fp32`` / ``bf16`` / ``fp16`` are the precisions of :mod:`util.precision`; ``orig`` is float32 through the
original's compute path (:class:`benchmark.original_path.OriginalPath`, NCHW layout, f-BRS without its
folded copy), a same-machine stand-in for the original code.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import torch

from util.precision import autocast_dtype, cpu_bf16_flags, describe_compute, precision_name

MODES = ("fp32", "bf16", "fp16", "orig")


def mode_precision(mode: str) -> str:
    """The :mod:`util.precision` name a mode computes in (``orig`` is float32)."""
    return "float32" if mode == "orig" else precision_name(mode)


def cpu_bf16_note() -> str:
    """One line on the CPU's bfloat16 support (for the report)."""
    flags = cpu_bf16_flags()
    return (f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; bf16 flags in /proc/cpuinfo: "
            f"{', '.join(flags) if flags else 'none (no avx512_bf16 / amx_bf16)'}")


def available_modes(requested: list[str], device: torch.device,
                    force: bool) -> tuple[list[str], dict[str, str], list[str]]:
    """Split the requested modes into those to run and those skipped (with the reason); notes say
    which precision each mode runs (:func:`util.precision.describe_compute`)."""
    run, skipped, notes = [], {}, []
    if device.type == "cpu":
        notes.append(cpu_bf16_note())
    for mode in requested:
        reason = None
        if mode == "bf16":
            if device.type == "cpu" and not cpu_bf16_flags():
                reason = (f"this CPU has no native bfloat16 ({cpu_bf16_note()}); emulated bf16 is slower "
                          f"than fp32")
            elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
                reason = "this GPU does not support bfloat16"
        elif mode == "fp16" and device.type == "cpu":
            reason = "float16 autocast is a CUDA mode (CPU float16 convolutions are emulated and slow)"
        if reason is not None and not force:
            skipped[mode] = reason + " (--force-precision runs it anyway)"
            continue
        if reason is not None:
            notes.append(f"{mode} forced: {reason}")
        run.append(mode)
        notes.append(f"{mode}: {describe_compute(device, mode_precision(mode))}"
                     + (", original compute path" if mode == "orig" else ""))
    return run, skipped, notes


def precision_kwargs(fn: Callable, mode: str) -> dict[str, Any] | None:
    """``{'precision': ...}`` when ``fn`` takes a ``precision`` keyword (the component handles precision
    itself), else None (the benchmark wraps it in autocast)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if "precision" not in params or mode == "orig":
        return None
    return {"precision": mode_precision(mode)}


def autocast_context(mode: str, device: str, native: bool) -> contextlib.AbstractContextManager:
    """Autocast for a reduced-precision mode unless the component handles precision itself (``native``)."""
    dtype = autocast_dtype(mode_precision(mode))
    if dtype is None or native:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
