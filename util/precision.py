"""Which device runs the networks and which precision is fast on it (the one place that decides both).

Callers turn a user's choice into ``(device, precision)`` with :func:`resolve_device_precision` and
tell the user what runs with :func:`describe_compute` (e.g. ``"cpu, float32 (exact)"``).

bfloat16 is only worth it on CPUs with native bf16 arithmetic (AVX-512-BF16 or AMX); elsewhere oneDNN
emulates it and a propagation runs ~10× *slower* (measured: 65 s vs 4.6 s CPU time per decoder call on
an AVX2 EPYC). On CUDA, float16 autocast is the original GUI's default.
"""
from __future__ import annotations

import functools
import warnings

import torch

PRECISIONS = ("float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float32": "float32",
            "bfloat16": "bfloat16", "float16": "float16"}


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The device a user asked for: ``None``/``"auto"`` → CUDA when available, else CPU; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``. Raises ValueError (one sentence: what is wrong; what to do) for an unknown
    name, CUDA without a usable GPU, or a GPU index that does not exist."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {str(spec)!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"unsupported device {str(spec)!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(spec)!r} asked for, but no CUDA GPU is usable here; use cpu or auto")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {str(spec)!r} does not exist: this machine has {count} GPU(s) "
                         f"(cuda:0..cuda:{count - 1})")
    return device


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU flags that give native bf16 arithmetic (empty when there are none)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        flags = set()
    return tuple(sorted(f for f in ("avx512_bf16", "amx_bf16") if f in flags))


def precision_name(name: str) -> str:
    """The canonical name of a precision or its alias (``fp32``/``bf16``/``fp16``): ``"float32"``,
    ``"bfloat16"`` or ``"float16"``. Raises ValueError for anything else."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _ALIASES:
        raise ValueError(f"precision must be float32, bfloat16 or float16 (or fp32, bf16, fp16); got {name!r}")
    return _ALIASES[key]


def fast_precision(device: torch.device | str) -> str:
    """The reduced precision that is fast on ``device``: float16 on CUDA, bfloat16 on CPUs with native
    bf16, else float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return "float16"
    return "bfloat16" if cpu_bf16_flags() else "float32"


# The precision each network runs in on a CPU unless the user says otherwise. A reduced precision may be a
# default only where it is measured on the trained stand-ins (scripts/make_standins.py, held-out generated
# clips) to cost at most 0.5 J&F points (S2M: IoU points) and to keep at least 99.5 % of the float32 masks'
# pixels. bfloat16 S2M: 0.0 points lost, 99.99 % of pixels kept (two stand-ins); bfloat16 propagation: 99.06 %
# of pixels on the best stand-in; bfloat16 fusion: 98.94 % on the fusion stand-in of the best propagation one.
CPU_DEFAULTS = {"propagation": "float32", "fusion": "float32", "s2m": "bfloat16"}


def default_precision(device: torch.device | str, network: str = "propagation") -> str:
    """The precision ``network`` (``"propagation"``, ``"fusion"`` or ``"s2m"``) runs in unless the user says
    otherwise: float16 autocast on CUDA (the original's default); on CPU the measured default of
    :data:`CPU_DEFAULTS` where the CPU computes it natively (bfloat16 needs AVX-512-BF16/AMX), else float32."""
    if network not in CPU_DEFAULTS:
        raise ValueError(f"unknown network {network!r}; one of {', '.join(CPU_DEFAULTS)}")
    if torch.device(device).type == "cuda":
        return "float16"
    wanted = CPU_DEFAULTS[network]
    return wanted if wanted == "float32" or cpu_bf16_flags() else "float32"


def resolve_precision(requested: str | None, device: torch.device | str) -> str:
    """Normalise a precision name; ``"auto"`` picks :func:`fast_precision`. Warns when bfloat16 is asked
    for on a CPU without native bf16 (allowed, but slow) and rejects float16 on CPU."""
    if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
        return fast_precision(device)
    requested = requested.strip().lower() if isinstance(requested, str) else requested
    if requested not in _ALIASES:
        raise ValueError(f"precision must be auto, float32, bfloat16 or float16; got {requested!r}")
    name = _ALIASES[requested]
    device = torch.device(device)
    if device.type == "cpu":
        if name == "float16":
            raise ValueError("precision float16 needs CUDA; use bfloat16 (CPUs with AVX-512-BF16/AMX) or float32")
        if name == "bfloat16" and not cpu_bf16_flags():
            warnings.warn("bfloat16 on a CPU without AVX-512-BF16/AMX is emulated and much slower than float32",
                          RuntimeWarning, stacklevel=2)
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``None`` for float32 (no autocast), else the autocast dtype."""
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision_name(precision)]


def resolve_device_precision(device: str | torch.device | None = None, precision: str | None = "float32",
                             *, no_amp: bool = False) -> tuple[torch.device, str]:
    """The one decision of where and how the networks run, from what the user asked for.

    ``device``: as :func:`resolve_device` (``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``).
    ``precision``: ``"auto"``/``None`` (the fast one for the device, :func:`fast_precision`),
    ``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``. ``no_amp`` (the
    original's ``--no_amp``) forces float32 whatever ``precision`` says.

    Returns ``(device, precision name)``. Raises ValueError (one sentence) for an unknown or unusable
    device, an unknown precision or float16 on CPU.
    """
    dev = resolve_device(device)
    if no_amp:
        return dev, "float32"
    return dev, resolve_precision(precision, dev)


def describe_compute(device: torch.device | str, precision: str) -> str:
    """One line for the user: ``"cpu, float32 (exact)"``, ``"cpu, bfloat16 (native AVX-512-BF16)"``,
    ``"cuda:0, float16 (autocast)"``."""
    device = torch.device(device)
    name = precision_name(precision)
    if name == "float32":
        how = "exact"
    elif device.type == "cuda":
        how = "autocast"
    else:
        flags = cpu_bf16_flags()
        how = ("native " + " + ".join(f.upper().replace("512_", "-512-").replace("_", "-") for f in flags)
               if flags else "emulated, slower than float32")
    return f"{device}, {name} ({how})"
