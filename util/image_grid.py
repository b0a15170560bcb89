"""Captioned image grids for tensorboard (the original ``util/image_saver.py`` layout).

One row per named category (caption in a first, dark tile), one column per sample.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

from util.image_util import denormalize


def image_tile(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A normalised ``3×H×W`` image → ``h×w×3`` float RGB in [0, 1] at ``size`` = (w, h)."""
    return _resize(denormalize(x.detach().float().cpu()).permute(1, 2, 0).numpy(), size)


def mask_tile(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``1×H×W`` (or ``H×W``) map in [0, 1] → ``h×w×3`` float grey tile at ``size`` = (w, h)."""
    m = x.detach().float().cpu().reshape(x.shape[-2:]).clamp(0, 1).numpy()
    return np.repeat(_resize(m, size)[..., None], 3, axis=2)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (a.shape[1], a.shape[0]) != tuple(size):
        a = cv2.resize(a, tuple(size), interpolation=cv2.INTER_NEAREST)
    return np.clip(a, 0, 1)


def captioned_grid(rows: Mapping[str, Sequence[np.ndarray]], size: tuple[int, int]) -> np.ndarray:
    """``rows``: caption → list of ``h×w×3`` float tiles (same count per row) → uint8 ``H×W×3`` grid."""
    w, h = size
    n_cols = max(len(v) for v in rows.values())
    grid = np.zeros((h * len(rows), w * (n_cols + 1), 3), dtype=np.uint8)
    big = h > 200
    for r, (caption, tiles) in enumerate(rows.items()):
        for i, line in enumerate(caption.split("\n")):
            y = r * h + (100 if big else 10) + i * 40
            cv2.putText(grid, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 if big else 0.4, (255, 255, 255),
                        2 if big else 1, cv2.LINE_AA)
        for c, tile in enumerate(tiles):
            grid[r * h:(r + 1) * h, (c + 1) * w:(c + 2) * w] = (tile * 255).astype(np.uint8)
    return grid
