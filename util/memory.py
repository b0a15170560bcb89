"""Resident memory of this process (the one reader: the GUI's status line and the benchmark use it).

Linux reads ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` peak); elsewhere ``psutil`` when installed
for the current value and ``getrusage`` for the peak. A value that cannot be read is 0.
"""
from __future__ import annotations

import os
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


_MMAP_THRESHOLD_SET = False
_DEFAULT_HEAP = False          # keep_default_heap() was called: leave glibc's policy alone
M_MMAP_THRESHOLD = -3          # mallopt parameter number (glibc malloc.h)
LARGE_BLOCK_BYTES = 2 ** 20

# PyTorch's CPU allocator reads this variable once, at the process's first tensor allocation
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
HUGE_PAGE_BYTES = 2 * 2 ** 20


def request_huge_pages() -> None:
    """Ask PyTorch's CPU allocator to back every tensor of 2 MiB or more with transparent huge pages
    (``THP_MEM_ALLOC_ENABLE=1``: 2 MiB-aligned blocks, ``madvise(MADV_HUGEPAGE)``), unless the user set
    the variable. It only takes effect when called before the process allocates its first tensor, so
    ``util/__init__.py`` calls it on import (every entry point imports ``util`` before loading weights).

    Why: large tensors are memory-mapped afresh for every operation (see :func:`map_large_allocations`),
    and filling fresh 4 KiB pages costs a page fault each: a ReLU into a new 53 MB tensor took 23 ms,
    into an existing one 6 ms (480p, 2 threads). With huge pages a fault covers 2 MiB; a propagation
    frame is 10–25 % faster (same numbers: only where the memory comes from changes). Needs a Linux
    kernel with transparent huge pages in ``madvise`` or ``always`` mode; elsewhere it changes nothing.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def huge_pages_active() -> bool:
    """Whether PyTorch's CPU allocator takes its huge-page path in this process, probed with one 64 MiB
    allocation (never touched, so never resident): that path page-aligns large blocks (and advises huge
    pages for them), the plain one aligns them to 64 bytes past glibc's chunk header. 64 MiB is above
    any mmap threshold glibc uses, so the block is always a fresh map, never a heap address that could
    be page-aligned by chance."""
    import torch
    probe = torch.empty(64 * 2 ** 20, dtype=torch.uint8)
    return probe.data_ptr() % 4096 == 0


def large_blocks_mapped() -> bool:
    """Whether :func:`map_large_allocations` has set glibc's policy in this process."""
    return _MMAP_THRESHOLD_SET


def keep_default_heap() -> None:
    """Leave glibc's default heap policy in place for the rest of this process: later calls of
    :func:`map_large_allocations` do nothing (the benchmark's ``orig`` mode, which runs as the
    original code does)."""
    global _DEFAULT_HEAP
    _DEFAULT_HEAP = True


def map_large_allocations() -> bool:
    """Make glibc serve every block of ``LARGE_BLOCK_BYTES`` or more with its own memory map, returned
    to the system when freed (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``, once per process); True if set.

    Why: by default glibc raises that threshold up to 32 MiB as large blocks are freed, after which
    frame-sized tensors come from the heap, and a long propagation (tensors of a few MiB allocated and
    freed every frame among long-lived ones) leaves the heap fragmented and resident. Measured on a
    1000-frame 480p pass with 3 objects: resident memory grew ~6 MB per frame with nothing alive to show
    for it (4.6 GB after 381 frames); with the fixed threshold the heap stays at ~0.2 GB and resident
    memory follows what is alive. Elsewhere (no glibc) it does nothing.
    """
    global _MMAP_THRESHOLD_SET
    if _DEFAULT_HEAP:
        return False
    if _MMAP_THRESHOLD_SET:
        return True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        _MMAP_THRESHOLD_SET = bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
    except (OSError, AttributeError):
        return False
    return _MMAP_THRESHOLD_SET
