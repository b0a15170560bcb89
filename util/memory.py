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
        # the kernel updates the high-water mark lazily (per-thread counters), so it can trail the
        # current value by a few pages: the peak is at least what is resident now
        return max(kib * 1024, current_rss_bytes())
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, KiB on Linux and the BSDs
    return int(rss if sys.platform == "darwin" else rss * 1024)


def current_rss_mib() -> float:
    """:func:`current_rss_bytes` in MiB (the GUI's status line)."""
    return current_rss_bytes() / 2 ** 20


_LIBC = None


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); True if it ran.

    Why: below glibc's mmap threshold, which it raises up to 32 MiB as large blocks are freed, tensors
    come from the heap. A long propagation frees and allocates frame-sized tensors among long-lived ones
    (cached features, probabilities, memory keys), and the freed holes stay resident: measured on a
    1000-frame 480p pass, resident memory grew by ~5.6 MB per frame with nothing alive to show for it.
    ``malloc_trim`` returns every free page, inside the heap too. Elsewhere (no glibc) it does nothing.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
            _LIBC = libc if hasattr(libc, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True
