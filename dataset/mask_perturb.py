"""Random corruption of a ground-truth mask into a plausible "previous mask" (S2M training, as in Scribble-to-Mask)."""
from __future__ import annotations

import cv2
import numpy as np

MAX_ROUNDS = 250
RECTANGLES_PER_ROUND = 4


def random_structure(size: int, rng=np.random) -> np.ndarray:
    """A random structuring element of ``size``: square, disk, or an ellipse of half width / half height."""
    choice = rng.randint(1, 5)
    if choice == 1:
        return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    if choice == 2:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    if choice == 3:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size // 2))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size // 2, size))


def random_dilate(seg: np.ndarray, min_size: int = 3, max_size: int = 10, rng=np.random) -> np.ndarray:
    """Dilate with a random element of size ``min_size … max_size - 1``."""
    return cv2.dilate(seg, random_structure(rng.randint(min_size, max_size), rng), iterations=1)


def random_erode(seg: np.ndarray, min_size: int = 3, max_size: int = 10, rng=np.random) -> np.ndarray:
    """Erode with a random element of size ``min_size … max_size - 1``."""
    return cv2.erode(seg, random_structure(rng.randint(min_size, max_size), rng), iterations=1)


def mask_iou(seg: np.ndarray, gt: np.ndarray) -> float:
    """IoU of the non-zero pixels of two masks (1 for two empty masks)."""
    intersection = np.count_nonzero(np.logical_and(seg, gt))
    union = np.count_nonzero(np.logical_or(seg, gt))
    return (intersection + 1e-6) / (union + 1e-6)


def random_rectangle(h: int, w: int, rng=np.random) -> tuple[int, int, int, int]:
    """A random non-empty sub-rectangle ``(x0, y0, x1, y1)`` (exclusive ends) of an ``h×w`` image."""
    x0, y0 = rng.randint(w), rng.randint(h)
    return x0, y0, rng.randint(x0 + 1, w + 1), rng.randint(y0 + 1, h + 1)


def perturb_mask(gt: np.ndarray, iou_target: float = 0.6, rng=np.random) -> np.ndarray:
    """``gt`` H×W uint8 (0/255) → a perturbed copy: rounds of 4 random rectangles, each dilated or eroded (and
    sometimes seeded with a random pixel, which grows into a hole or a blob), until IoU with ``gt`` falls
    below ``iou_target`` (at most 250 rounds)."""
    h, w = gt.shape
    seg = gt.copy()
    if h <= 2 or w <= 2:  # too small to perturb
        return seg
    for _ in range(MAX_ROUNDS):
        for _ in range(RECTANGLES_PER_ROUND):
            x0, y0, x1, y1 = random_rectangle(h, w, rng)
            if rng.rand() < 0.1:
                seg[(y0 + y1) // 2, (x0 + x1) // 2] = rng.randint(2) * 255
            region = seg[y0:y1, x0:x1]
            seg[y0:y1, x0:x1] = random_dilate(region, rng=rng) if rng.rand() < 0.5 else random_erode(region, rng=rng)
        if mask_iou(seg, gt) < iou_target:
            break
    return seg
