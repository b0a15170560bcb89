"""Helpers for tests that run the official DAVIS interactive session offline on generated data."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

import util.davis_compat as davis_compat  # before davisinteractive
from util.palette import load_mask_png


def load_gt(root: Path, seq: str, num_frames: int) -> np.ndarray:
    """``T×H×W`` uint8 ground truth of a DAVIS-layout sequence."""
    return np.stack([load_mask_png(Path(root) / "Annotations" / "480p" / seq / f"{f:05d}.png")
                     for f in range(num_frames)])


def run_session(root: Path, meta: dict, segment: Callable[[str, dict, bool], np.ndarray], report_dir: Path,
                max_interactions: int = 8, max_time: float = 8 * 30, subset: str = "val") -> tuple[dict, object]:
    """Run ``DavisInteractiveSession`` on ``meta``'s sequences with ``segment(seq, scribbles, new) -> T×H×W``.

    Registers the sequences for the duration only (Davis state restored from deep copies).
    Returns ``(global summary, report DataFrame)``.
    """
    from davisinteractive.session import DavisInteractiveSession

    with davis_compat.preserved_davis_state(meta, subset):
        with DavisInteractiveSession(host="localhost", user_key="fastermivos-tests", davis_root=str(root),
                                     subset=subset, max_nb_interactions=max_interactions, max_time=max_time,
                                     metric_to_optimize="J_AND_F", report_save_dir=str(report_dir)) as session:
            while session.next():
                seq, scribbles, new = session.get_scribbles(only_last=True)
                session.submit_masks(segment(seq, scribbles, new))
            summary = session.get_global_summary(save_file=str(Path(report_dir) / "summary.json"))
            report = session.get_report()
    return summary, report
