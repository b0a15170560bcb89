"""An anonymous file for data spilled out of RAM, read and written at byte offsets.

The file is created in a given folder and unlinked at once, so nothing is left behind however the
process ends; its space is freed when it is closed. Reads and writes are plain positioned system calls
(``os.pwrite`` / ``os.preadv``), no memory map: the kernel's page cache, not this process, holds what
was written, so it never counts in the process's resident memory. Calls are serialised by a lock (a
GUI reads from its view thread while its worker writes).
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path


class SpillFile:
    """``folder``: where the file is created (made if missing); ``prefix``: its (short-lived) name's start."""

    def __init__(self, folder: str | os.PathLike, prefix: str):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".spill", dir=folder)
        os.unlink(name)
        self.fd: int | None = fd
        self._lock = threading.Lock()

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at byte ``offset`` (the file grows as needed, sparse where never written)."""
        view = memoryview(data).cast("B")
        with self._lock:
            assert self.fd is not None, "spill file is closed"
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n

    def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill the writable ``buffer`` (any C-contiguous buffer) from byte ``offset``."""
        view = memoryview(buffer).cast("B")
        with self._lock:
            assert self.fd is not None, "spill file is closed"
            while view:
                n = os.preadv(self.fd, [view], offset)
                if n <= 0:
                    raise OSError(f"spill file ended early at byte {offset}")
                view, offset = view[n:], offset + n

    def read_scattered(self, offset: int, buffers: list[memoryview]) -> None:
        """Fill ``buffers`` one after the other from the contiguous bytes at ``offset`` (one
        ``preadv``: a read that skips what it does not need into a scratch buffer)."""
        views = [memoryview(b).cast("B") for b in buffers]
        with self._lock:
            assert self.fd is not None, "spill file is closed"
            n = os.preadv(self.fd, views, offset)
        # a regular file returns everything at once; finish a short read piece by piece
        for view in views:
            if n < len(view):
                self.read_into(offset + n, view[n:])
            n = max(0, n - len(view))
            offset += len(view)

    def close(self) -> None:
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def __del__(self) -> None:
        self.close()
