"""Synthetic corrective scribbles for S2M training (as in Scribble-to-Mask): from the false positives / false negatives of a
previous mask against the ground truth, either the tamed robot or hand-made-looking strokes (region boundary,
thinned region, random Bézier curves)."""
from __future__ import annotations

import cv2
import numpy as np

from dataset.mask_perturb import random_erode, random_rectangle
from dataset.tamed_robot import TamedRobot

try:  # Zhang–Suen thinning; opencv-contrib's implementation when installed
    from cv2 import ximgproc as _ximgproc
except ImportError:  # pragma: no cover - depends on the OpenCV build
    _ximgproc = None

CURVE_SAMPLES = 1024
_robot = TamedRobot()


def disk_kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def zhang_suen_thinning(region: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeleton (Zhang–Suen) of a {0,1} uint8 region → {0,1} uint8."""
    if _ximgproc is not None:
        return (_ximgproc.thinning(region * 255, thinningType=_ximgproc.THINNING_ZHANGSUEN) > 128).astype(np.uint8)
    from skimage.morphology import skeletonize
    return skeletonize(region > 0, method="zhang").astype(np.uint8)


def _erode_random_rectangles(scribble: np.ndarray, rng) -> np.ndarray:
    """Break a stroke: erode 4 random rectangles with random elements of size 5…9."""
    h, w = scribble.shape
    for _ in range(4):
        x0, y0, x1, y1 = random_rectangle(h, w, rng)
        scribble[y0:y1, x0:x1] = random_erode(scribble[y0:y1, x0:x1], min_size=5, rng=rng)
    return scribble


def boundary_scribble(region: np.ndarray, rng=np.random) -> np.ndarray:
    """A stroke along the inner boundary of the (eroded) region, partly erased."""
    eroded = cv2.erode(region, disk_kernel(rng.randint(3, 50)))
    scribble = cv2.morphologyEx(eroded, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return _erode_random_rectangles(scribble, rng)


def thinned_scribble(region: np.ndarray, rng=np.random) -> np.ndarray:
    """The region's Zhang–Suen skeleton, 3 pixels wide, partly erased."""
    scribble = cv2.dilate(zhang_suen_thinning(region), np.ones((3, 3), np.uint8))
    return _erode_random_rectangles(scribble, rng)


def quadratic_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = CURVE_SAMPLES) -> np.ndarray:
    """``n`` points of the quadratic Bézier curve with control points p0, p1, p2 (each (x, y)) → n×2."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2


def curve_scribble(region: np.ndarray, min_srb: int = 2, max_srb: int = 4, sort: bool = True,
                   rng=np.random) -> np.ndarray:
    """``min_srb … max_srb-1`` random quadratic Bézier strokes (thickness 3) over 3 random pixels of the region,
    clipped to the region dilated by a disk of 3…6; with ``sort`` 10 candidates are drawn and the longest kept."""
    num_lines = rng.randint(min_srb, max_srb)
    candidates = 10 if sort else num_lines
    pixels = np.argwhere(region)  # (y, x)
    strokes, lengths = [], []
    for _ in range(candidates):
        chosen = pixels[rng.choice(len(pixels), size=3, replace=len(pixels) < 3)][:, ::-1].astype(np.float64)
        curve = quadratic_bezier(chosen[0], chosen[1], chosen[2]).astype(np.int32).reshape(-1, 1, 2)
        stroke = cv2.polylines(np.zeros_like(region), [curve], isClosed=False, color=1, thickness=3)
        # allow a little error around the region, as a user would
        stroke = stroke * cv2.dilate(region, disk_kernel(rng.randint(3, 7)))
        strokes.append(stroke)
        lengths.append(int(stroke.sum()))
    order = sorted(range(len(strokes)), key=lambda i: lengths[i], reverse=True)
    total = sum(strokes[i] for i in order[:num_lines])
    return (total > 0.5).astype(np.uint8)


def _random_type_scribble(region: np.ndarray, rng) -> np.ndarray:
    pick = rng.rand()
    if pick < 0.33:
        return boundary_scribble(region, rng)
    if pick < 0.66:
        return thinned_scribble(region, rng)
    return curve_scribble(region, rng=rng)


def get_scribble(mask: np.ndarray, gt: np.ndarray, from_zero: bool, rng=np.random) -> tuple[np.ndarray, np.ndarray]:
    """``mask`` (previous mask) and ``gt``, H×W uint8 (binary at > 128) → (positive, negative) scribbles H×W
    uint8 {0, 1}. Positive scribbles mark false negatives, negative ones false positives."""
    mask = mask > 128
    gt = gt > 128
    use_robot = (not from_zero) and rng.rand() < 0.75
    fp = (mask & ~gt).astype(np.uint8)
    fn = (~mask & gt).astype(np.uint8)
    if use_robot:
        neg = cv2.dilate(_robot.interact(fp), np.ones((3, 3), np.uint8))
        pos = cv2.dilate(_robot.interact(fn), np.ones((3, 3), np.uint8))
        return pos, neg

    # opening removes thin slivers of error
    opening = disk_kernel(rng.randint(5, 20))
    fp = cv2.morphologyEx(fp, cv2.MORPH_OPEN, opening)
    fn = cv2.morphologyEx(fn, cv2.MORPH_OPEN, opening)
    scribbles = []
    for errors in (fn, fp):
        scribble = np.zeros(errors.shape, np.uint8)
        num_labels, labels = cv2.connectedComponents(errors)
        for label in range(1, num_labels):
            region = (labels == label).astype(np.uint8)
            if region.sum() < rng.randint(10, 100):
                continue
            scribble |= _random_type_scribble(region, rng)
            if rng.rand() < 0.3:  # sometimes a second kind of stroke too
                scribble |= _random_type_scribble(region, rng)
        scribbles.append(scribble)

    # sometimes (or when nothing was drawn) scribble on the ground truth itself
    if rng.rand() < 0.3 or (scribbles[0].sum() == 0 and scribbles[1].sum() == 0):
        for i, region in enumerate((gt.astype(np.uint8), (~gt).astype(np.uint8))):
            if region.sum() < 100:
                continue
            scribbles[i] = scribbles[i] | curve_scribble(region, max_srb=5, sort=False, rng=rng)
    return scribbles[0].astype(np.uint8), scribbles[1].astype(np.uint8)
