"""DAVIS / PASCAL VOC palette, palette-PNG I/O and overlay colours (the only place for these)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from util.fileio import atomic_path


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map used by DAVIS annotations: ``n×3`` uint8 (index 1 = (128,0,0))."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


DAVIS_PALETTE: np.ndarray = _voc_palette()
DAVIS_PALETTE_BYTES: bytes = DAVIS_PALETTE.tobytes()

# Overlay colours of the original GUI for objects 1..6 (index 0 = background), extended with
# well-separated hues so more than 6 objects stay distinguishable.
_BASE_COLOURS = [(0, 0, 0), (255, 50, 50), (50, 255, 50), (50, 50, 255), (255, 50, 255),
                 (50, 255, 255), (255, 255, 50)]


def object_colours(n_objects: int) -> np.ndarray:
    """``(n_objects+1)×3`` uint8 overlay colours; the first 7 equal the original GUI's table."""
    cols = list(_BASE_COLOURS)
    k = 0
    while len(cols) < n_objects + 1:
        # golden-ratio hue walk, bright and saturated, deterministic
        h = (0.13 + 0.618033988749895 * k) % 1.0
        k += 1
        i = int(h * 6)
        f = h * 6 - i
        v, s = 235, 0.75
        p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
        cols.append((int(r), int(g), int(b)))
    return np.array(cols[:n_objects + 1], dtype=np.uint8)


def save_mask_png(path: str | os.PathLike, mask: np.ndarray, palette: bytes | None = None) -> None:
    """Write a ``H×W`` uint8 label map as a palette PNG (atomically)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map, got shape {mask.shape}")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(palette if palette is not None else DAVIS_PALETTE_BYTES)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map (palette ``P`` or grey ``L`` PNG) as ``H×W`` uint8 indices."""
    img = Image.open(path)
    if img.mode not in ("P", "L", "1", "I;16", "I"):
        # an RGB mask: map each distinct colour to an index via the DAVIS palette when possible
        img = img.convert("RGB")
        rgb = np.asarray(img)
        flat = rgb.reshape(-1, 3)
        lut = {tuple(c): i for i, c in enumerate(DAVIS_PALETTE.tolist())}
        idx = np.array([lut.get(tuple(c), 255) for c in map(tuple, flat)], dtype=np.uint8)
        return idx.reshape(rgb.shape[:2])
    return np.asarray(img).astype(np.uint8)
