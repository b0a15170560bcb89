"""Rank-0 training logger: console lines, tensorboard scalars / images / text, git state, progress.

Console lines keep the original trainers' format::

    <id> - It <it:6d> [TRAIN] [<tag:13>]: <value, 9 characters>

Tensorboard events go to ``<log_root>/<long_id>`` (``SummaryWriter``). With ``long_id=None`` (the
original's ``--id NULL``) nothing is written to disk: console lines are still printed, but
tensorboard calls are skipped with a one-time warning.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def fixed_width(value: float) -> str:
    """``value`` with 9 decimals truncated to 9 characters, as the original prints metrics."""
    return "{:.9s}".format("{:0.9f}".format(value))


def git_description(path: str | os.PathLike = ".") -> str | None:
    """``"<branch> <commit sha>"`` of the git repository containing ``path`` (gitpython), or ``None``
    (with a warning) when it is not a git checkout or gitpython is unavailable."""
    try:
        import git
        repo = git.Repo(path, search_parent_directories=True)
        try:
            branch = str(repo.active_branch)
        except TypeError:  # detached HEAD
            branch = "(detached)"
        dirty = " (uncommitted changes)" if repo.is_dirty() else ""
        return f"{branch} {repo.head.commit.hexsha}{dirty}"
    except Exception as e:  # noqa: BLE001 - any failure only means "no git info"
        warnings.warn(f"git commit not logged ({type(e).__name__}: {str(e).strip()[:80]}); "
                      "run from a git checkout to record it", stacklevel=2)
        return None


class TensorboardLogger:
    """Logger used on rank 0 only (other ranks do not create one).

    ``short_id``: the experiment id printed on console lines; ``long_id``: the run folder name
    (``<%b%d_%H.%M.%S>_<id>``) or ``None`` to disable tensorboard output.
    """

    def __init__(self, short_id: str, long_id: str | None, log_root: str | os.PathLike = "log"):
        self.short_id = short_id
        self.long_id = long_id
        self.writer = None
        self._warned = False
        if long_id is None:
            warnings.warn("tensorboard logging is disabled (--id NULL)", stacklevel=2)
        else:
            from torch.utils.tensorboard import SummaryWriter
            self.log_dir = Path(log_root) / long_id
            self.writer = SummaryWriter(str(self.log_dir))
        git = git_description()
        if git is not None:
            self.log_string("git", git)

    def _disabled(self) -> bool:
        if self.writer is None:
            if not self._warned:
                warnings.warn("tensorboard logging is disabled; scalars and images are not saved", stacklevel=3)
                self._warned = True
            return True
        return False

    def log_scalar(self, tag: str, value: float, it: int) -> None:
        if not self._disabled():
            self.writer.add_scalar(tag, value, it)

    def log_metrics(self, prefix: str, tag: str, value: float, it: int) -> None:
        """Print the original console line and log ``<prefix>/<tag>`` as a scalar."""
        print(f"{self.short_id} - It {it:6d} [{prefix.upper()}] [{tag:13}]: {fixed_width(value)}", flush=True)
        self.log_scalar(f"{prefix}/{tag}", value, it)

    def log_image(self, tag: str, image_hwc_u8: np.ndarray, it: int) -> None:
        """Log an ``H×W×3`` uint8 RGB image (e.g. a training grid)."""
        if not self._disabled():
            self.writer.add_image(tag, np.ascontiguousarray(image_hwc_u8), it, dataformats="HWC")

    def log_string(self, tag: str, text: str) -> None:
        print(tag, text, flush=True)
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def log_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Print and store every hyperparameter (as text, one ``key: value`` per line)."""
        self.log_string("hyperpara", str(dict(params)))
        if self.writer is not None:
            self.writer.add_text("hyperpara_table", "  \n".join(f"{k}: {v}" for k, v in params.items()))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressMeter:
    """Iteration speed (it/s, over the last report window) and ETA to ``total`` iterations."""

    def __init__(self, start_it: int, total: int):
        self.total = total
        self._last_it = start_it
        self._last_time = time.monotonic()

    def update(self, it: int) -> tuple[float, float]:
        """Return ``(iterations per second, seconds left)`` since the previous call."""
        now = time.monotonic()
        done = it - self._last_it
        elapsed = max(now - self._last_time, 1e-9)
        self._last_it, self._last_time = it, now
        speed = done / elapsed if done > 0 else 0.0
        eta = (self.total - it) / speed if speed > 0 else math.inf
        return speed, eta

    def line(self, it: int) -> str:
        speed, eta = self.update(it)
        eta_txt = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 \
            else f"{eta / 86400:.1f} days"
        pct = 100.0 * it / max(self.total, 1)
        return f"[progress] it {it}/{self.total} ({pct:.1f}%), {speed:.2f} it/s, ETA {eta_txt}"
