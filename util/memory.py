"""Resident memory of this process (the one reader: the GUI's status line and the benchmark use it).

Linux reads ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` peak); elsewhere ``psutil`` when installed
for the current value and ``getrusage`` for the peak. A value that cannot be read is 0.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


M_TRIM_THRESHOLD = -1          # mallopt parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 2 ** 20    # while propagating: every block this large gets its own map
# between passes: what glibc's own dynamic rule settles at on 64-bit (its threshold's ceiling, and a
# trim threshold of twice that), fixed because a threshold once set through mallopt stops adapting
HEAP_MMAP_THRESHOLD_BYTES = 32 * 2 ** 20
HEAP_TRIM_THRESHOLD_BYTES = 64 * 2 ** 20
GLIBC_TRIM_THRESHOLD_BYTES = 128 * 2 ** 10   # glibc's default trim threshold

_DEFAULT_HEAP = False          # keep_default_heap() was called: leave glibc's policy alone
_libc: Any = None              # libc.so.6 once loaded; False where there is none
_pass_depth = 0                # how many mapped_large_blocks() scopes are open (any thread)
_policy_set = False            # the mapped policy is in force now
_policy_lock = threading.Lock()

# PyTorch's CPU allocator reads this variable once, at the process's first tensor allocation
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
HUGE_PAGE_BYTES = 2 * 2 ** 20


def request_huge_pages() -> None:
    """Ask PyTorch's CPU allocator to back every tensor of 2 MiB or more with transparent huge pages
    (``THP_MEM_ALLOC_ENABLE=1``: 2 MiB-aligned blocks, ``madvise(MADV_HUGEPAGE)``), unless the user set
    the variable. It only takes effect when called before the process allocates its first tensor, so
    ``util/__init__.py`` calls it on import (every entry point imports ``util`` before loading weights).

    Why: during a propagation pass large tensors are memory-mapped afresh for every operation (see
    :func:`mapped_large_blocks`), and filling fresh 4 KiB pages costs a page fault each: a ReLU into a
    new 53 MB tensor took 23 ms, into an existing one 6 ms (480p, 2 threads). With huge pages a fault covers 2 MiB; a propagation
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
    """Whether blocks of ``LARGE_BLOCK_BYTES`` or more are memory-mapped now (inside
    :func:`mapped_large_blocks`, with glibc)."""
    return _policy_set


def heap_policy() -> str:
    """The process's C-heap policy in words (the benchmark's allocator line)."""
    if _DEFAULT_HEAP or not _glibc():
        return "glibc default heap"
    return "blocks ≥ 1 MiB memory-mapped while propagating"


def keep_default_heap() -> None:
    """Leave glibc's default heap policy in place for the rest of this process: later
    :func:`mapped_large_blocks` scopes change nothing (the benchmark's ``orig`` mode, which runs as the
    original code does)."""
    global _DEFAULT_HEAP
    _DEFAULT_HEAP = True


def _glibc() -> Any:
    """glibc's ``libc.so.6`` with ``mallopt`` and ``malloc_trim``, or None elsewhere."""
    global _libc
    if _libc is None:
        try:
            import ctypes
            lib = ctypes.CDLL("libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


@contextlib.contextmanager
def mapped_large_blocks() -> Iterator[bool]:
    """While open (a propagation pass), glibc serves every block of ``LARGE_BLOCK_BYTES`` or more with
    its own memory map, returned to the system when freed; yields whether that policy is in force.
    Scopes nest and may be open on several threads; the outermost one sets and restores the policy.

    Why during passes: by default glibc raises its mmap threshold up to 32 MiB as large blocks are
    freed, after which frame-sized tensors come from the heap, and a long propagation (tensors of a few
    MiB allocated and freed every frame among long-lived ones) leaves the heap fragmented and resident.
    Measured on a 1000-frame 480p pass with 3 objects: resident memory grew ~6 MB per frame with
    nothing alive to show for it (4.6 GB after 381 frames); with the fixed threshold the heap stays at
    ~0.2 GB and resident memory follows what is alive. The scope starts by returning the heap's free
    memory to the system (``malloc_trim``).

    Why only then: an interaction (S2M, f-BRS's L-BFGS) allocates and frees the same few large blocks
    over and over; mapped afresh each time, they are faulted in page by page again (f-BRS's third
    click, 854×480: 6.8–7.5 s mapped against 4.6 s on the heap). Between scopes the heap serves blocks
    below 32 MiB, as glibc's own rule ends up doing. Elsewhere (no glibc) nothing changes.
    """
    global _pass_depth, _policy_set
    libc = None if _DEFAULT_HEAP else _glibc()
    if libc is None:
        yield False
        return
    with _policy_lock:
        _pass_depth += 1
        if _pass_depth == 1:
            libc.malloc_trim(0)
            _policy_set = bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
                               and libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD_BYTES))
        in_force = _policy_set
    try:
        yield in_force
    finally:
        with _policy_lock:
            _pass_depth -= 1
            if _pass_depth == 0:
                libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD_BYTES)
                libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD_BYTES)
                _policy_set = False
