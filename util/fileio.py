"""Atomic file writes: a crash or kill never leaves a truncated file under the final name.

The temporary file gets the permissions a plain ``open(path, "w")`` would give: the mode of the file
being replaced when there is one, otherwise ``0o666`` less the process umask (``0o644`` under the
usual umask 022), so outputs stay readable by others as ordinary files are.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # os.umask can only be read by setting it: set and restore under a lock (other threads that create
    # files in between would see the temporary value, hence the /proc route first)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def plain_open_mode(path: str | os.PathLike) -> int:
    """The permission bits ``open(path, "w")`` would leave ``path`` with: an existing file keeps its
    own, a new one gets ``0o666 & ~umask``."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``path`` atomically.

    Writers that open the yielded path by name (``torch.save``, ``cv2.imwrite``, PIL, ``open``) reuse
    the file, whose mode is already the one a plain ``open(path, "w")`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = plain_open_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates 0600 files; the final file must be as readable as an ordinary one
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield tmp_path
        if tmp_path.exists() and stat.S_IMODE(tmp_path.stat().st_mode) != mode:
            # a writer that unlinked and re-created the file: give it the intended mode again
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_partial_writes(folder: str | os.PathLike) -> int:
    """Delete the temporary files :func:`atomic_path` left under ``folder`` (recursively) when its
    process was killed mid-write (``.<name>.<random>.tmp<suffix>``); returns how many. Call it only on a
    folder no other process is writing into (e.g. before redoing one video's outputs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.rglob(".*.tmp*"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
