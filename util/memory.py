"""Resident memory of this process (the one reader: the GUI's status line and the benchmark use it).

Linux reads ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` peak); elsewhere ``psutil`` when installed
for the current value and ``getrusage`` for the peak. A value that cannot be read is 0.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in KiB, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now, in bytes (0 when it cannot be read)."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import os

        import psutil
        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        return 0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, KiB on Linux and the BSDs
    return int(rss if sys.platform == "darwin" else rss * 1024)


def current_rss_mib() -> float:
    """:func:`current_rss_bytes` in MiB (the GUI's status line)."""
    return current_rss_bytes() / 2 ** 20
