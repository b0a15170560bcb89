"""Mask overlays of the GUI and the export (numpy only): modes ``davis``, ``fade``, ``light``, as the original GUI defines them."""
from __future__ import annotations

import cv2
import numpy as np

from util.palette import object_colours

OVERLAY_MODES = ("davis", "fade", "light")
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def overlay(image: np.ndarray, mask: np.ndarray, mode: str = "davis", num_objects: int | None = None) -> np.ndarray:
    """``image`` ``H×W×3`` uint8, ``mask`` ``H×W`` uint8 labels → ``H×W×3`` uint8.

    Object pixels = ``a·image + (1−a)·colour`` (a = 0.5, or 0.9 for ``light``); a one-pixel outer
    contour is black; ``fade`` also darkens the background to 60%.
    """
    if mode not in OVERLAY_MODES:
        raise ValueError(f"unknown overlay mode {mode!r}; use one of {', '.join(OVERLAY_MODES)}")
    alpha = 0.9 if mode == "light" else 0.5
    k = int(mask.max()) if num_objects is None else max(int(num_objects), int(mask.max()))
    colours = object_colours(max(k, 1)).astype(np.float32)
    fg = mask > 0
    out = image.copy()
    if fg.any():
        blended = image[fg].astype(np.float32) * alpha + (1 - alpha) * colours[mask[fg]]
        out[fg] = blended.astype(np.uint8)
        # scipy's binary_dilation default (cross) == cv2 dilate with a 3×3 cross
        contour = (cv2.dilate(fg.astype(np.uint8), _CROSS) > 0) & ~fg
        out[contour] = 0
    if mode == "fade":
        out[~fg] = (out[~fg] * 0.6).astype(np.uint8)
    return out
