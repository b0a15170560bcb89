"""Heat-map overlays for correspondence visualisation (``try_correspondence.py``)."""
from __future__ import annotations

import cv2
import numpy as np


def overlay_heatmap(image_rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Dim ``image_rgb`` (``H×W×3`` uint8) and paint ``heat`` (``H×W`` in [0, 1]) in red on it.

    The look of the original demo: the heat is doubled and clipped so that mid values already
    show, the image is darkened where the heat is low and tinted red where it is high.
    """
    m = np.clip(heat.astype(np.float32) * 2, 0, 1)[..., None]
    img = image_rgb.astype(np.float32)
    red = np.zeros_like(img)
    red[..., 0] = 255
    out = img * (1 - m) * 0.7 + img * m * 0.3 + red * m * 0.7
    return np.clip(out, 0, 255).astype(np.uint8)


def mark_point(image_rgb: np.ndarray, x: int, y: int) -> np.ndarray:
    """Copy of ``image_rgb`` with a visible cross-hair circle at pixel ``(x, y)``."""
    out = np.ascontiguousarray(image_rgb).copy()
    cv2.circle(out, (int(x), int(y)), 6, (255, 255, 255), 2, lineType=cv2.LINE_AA)
    cv2.circle(out, (int(x), int(y)), 6, (0, 255, 0), 1, lineType=cv2.LINE_AA)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Place two ``H×W×3`` uint8 images next to each other on black (heights may differ)."""
    h = max(left.shape[0], right.shape[0])
    canvas = np.zeros((h, left.shape[1] + gap + right.shape[1], 3), dtype=np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1] + gap:] = right
    return canvas
