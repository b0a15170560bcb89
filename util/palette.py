"""Palettes, mask-file I/O and overlay colours (the only place for these).

Two colour tables, two purposes:

* **Written masks** are palette PNGs whose pixel values are the object ids (0 = background). Their
  palette is the DAVIS / PASCAL VOC palette (:data:`DAVIS_PALETTE`): it is part of the DAVIS format and
  what DAVIS tools and viewers expect. Only the ids carry meaning; a mask read from a file with its own
  colours (its own palette, or an RGB mask) can be written back with those colours
  (:attr:`MaskFile.palette`). Ids above 255 do not fit a palette PNG: they are written as 16-bit
  greyscale PNGs (:func:`save_label_png`).
* **Overlay colours** (:func:`object_colours`) draw objects on frames: the GUI's masks and scribbles and
  its exported overlays. Objects 1..6 keep the original GUI's colours; the next ones were chosen so that
  any two of the first 24 objects (and each of them and black) differ by a CIEDE2000 ΔE ≥ 20 (CIE76
  ΔE ≥ 25). The DAVIS palette is not used for them: its early entries are dark and several are close
  (index 8 = (64, 0, 0) is nearly black).

Reading masks (:func:`read_mask`): palette PNGs give their indices, greyscale PNGs their values, 16-bit
PNGs their 16-bit ids (never wrapped), RGB(A) masks one object per distinct colour (black, or
transparent, = background): the DAVIS index when every colour is a DAVIS palette colour, otherwise ids
1..K in the order the colours first appear (row by row), with the colours kept for writing.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

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

MAX_PALETTE_ID = 255
MAX_16BIT_ID = 65535

# Overlay colours: index 0 = background, 1..6 = the original GUI's table, 7..24 = a farthest-point
# selection in CIE Lab (CIEDE2000) from an sRGB grid, each as far as possible from all earlier ones and
# from black. Objects beyond 24 continue the farthest-point selection at run time (CIE76).
_OVERLAY_COLOURS = [
    (0, 0, 0), (255, 50, 50), (50, 255, 50), (50, 50, 255), (255, 50, 255), (50, 255, 255), (255, 255, 50),
    (30, 120, 75), (255, 225, 225), (165, 120, 0), (105, 165, 255), (135, 0, 60), (135, 120, 135),
    (165, 180, 150), (105, 45, 0), (0, 0, 90), (30, 135, 150), (60, 60, 0), (255, 195, 120),
    (255, 135, 165), (210, 180, 255), (45, 75, 75), (75, 165, 0), (75, 60, 90), (180, 0, 165),
]


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``...×3`` sRGB (0..255) → ``...×3`` CIE L*a*b* (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@functools.lru_cache(maxsize=8)
def _overlay_table(n: int) -> np.ndarray:
    cols = list(_OVERLAY_COLOURS)
    if n + 1 > len(cols):
        # farthest-point continuation over a 16-level sRGB grid: deterministic and well spread
        vals = np.arange(0, 256, 17)
        grid = np.stack(np.meshgrid(vals, vals, vals, indexing="ij"), -1).reshape(-1, 3)
        glab = srgb_to_lab(grid)
        chosen = srgb_to_lab(np.array(cols))
        dist = np.min(np.linalg.norm(glab[:, None] - chosen[None], axis=-1), axis=1)
        while len(cols) < n + 1:
            i = int(np.argmax(dist))
            cols.append(tuple(int(v) for v in grid[i]))
            dist = np.minimum(dist, np.linalg.norm(glab - glab[i], axis=-1))
    table = np.array(cols[:n + 1], dtype=np.uint8)
    table.flags.writeable = False
    return table


def object_colours(n_objects: int) -> np.ndarray:
    """``(n_objects+1)×3`` uint8 overlay colours (index 0 = background, black); 1..6 are the original
    GUI's, and any two of the first 24 are clearly distinct (CIEDE2000 ΔE ≥ 20)."""
    return _overlay_table(max(int(n_objects), 0)).copy()


# ------------------------------------------------------------------------------------------ reading

@dataclass(frozen=True)
class MaskFile:
    """What a mask file holds.

    ``labels``: ``H×W`` object ids, uint8 when every id is ≤ 255, else uint16 (ids as stored).
    ``kind``: ``"palette"``, ``"grey"`` (8-bit grey, also RGB with R = G = B), ``"grey16"`` (16-bit or
    32-bit grey) or ``"rgb"`` (one object per colour).
    ``palette``: ``256×3`` uint8, the colour of each id ≤ 255 for writing this mask's ids back as a
    palette PNG: the file's own palette, the RGB mask's colours, else the DAVIS palette.
    ``colours``: for RGB masks, ``{object id: (r, g, b)}`` of the file's colours (the mapping used).
    """
    labels: np.ndarray
    kind: str
    palette: np.ndarray
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        """The non-zero ids present, ascending."""
        return [int(v) for v in np.unique(self.labels) if v != 0]

    @property
    def palette_bytes(self) -> bytes:
        return np.ascontiguousarray(self.palette, dtype=np.uint8).tobytes()

    def colour_lut(self) -> np.ndarray:
        """``(max id + 1)×3`` uint8 colour of every id, for drawing these labels: the palette for 8-bit
        ids, the overlay colours of the objects in id order for 16-bit ids (they have no palette)."""
        if self.labels.dtype == np.uint8:
            return self.palette.copy()
        ids = self.ids
        lut = np.zeros((max(ids, default=0) + 1, 3), np.uint8)
        if ids:
            lut[ids] = object_colours(len(ids))[1:]
        return lut


def _padded_palette(pal: list[int] | None) -> np.ndarray:
    """A PIL palette list (maybe shorter than 256 entries) → ``256×3``, DAVIS colours past its end."""
    out = DAVIS_PALETTE.copy()
    if pal:
        arr = np.asarray(pal[:768], np.uint8).reshape(-1, 3)
        out[:len(arr)] = arr
    return out


def _ids_array(path: Path, values: np.ndarray) -> np.ndarray:
    """Integer ids (any width) → uint8 when all fit, else uint16; refuse what a label map cannot be."""
    if values.size == 0:
        return values.astype(np.uint8)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0:
        raise ValueError(f"{path}: negative label values ({lo}); a label map holds ids 0..{MAX_16BIT_ID}")
    if hi > MAX_16BIT_ID:
        raise ValueError(f"{path}: label values up to {hi} do not fit in 16 bits; use ids 0..{MAX_16BIT_ID}")
    return values.astype(np.uint8 if hi <= MAX_PALETTE_ID else np.uint16)


def _read_rgb(path: Path, img: Image.Image, known: dict[int, tuple[int, int, int]] | None) -> MaskFile:
    rgba = np.array(img.convert("RGBA"))
    rgb = rgba[..., :3]
    rgb[rgba[..., 3] == 0] = 0  # transparent = background, whatever colour it stores
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        # a greyscale label map saved as RGB: the value is the id, as for an 8-bit grey PNG
        return MaskFile(rgb[..., 0].copy(), "grey", DAVIS_PALETTE.copy())
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    uniq, first, inverse = np.unique(packed.ravel(), return_index=True, return_inverse=True)
    davis = (DAVIS_PALETTE[:, 0].astype(np.uint32) << 16) | (DAVIS_PALETTE[:, 1].astype(np.uint32) << 8) \
        | DAVIS_PALETTE[:, 2]
    davis_index = {int(c): i for i, c in enumerate(davis)}
    colours = [int(c) for c in uniq if c != 0]
    if all(c in davis_index for c in colours):
        # a DAVIS-palette mask saved as RGB: its ids are the palette indices
        lut = np.array([davis_index.get(int(c), 0) for c in uniq], np.uint8)
        labels = lut[inverse].reshape(packed.shape)
        mapping = {davis_index[c]: _unpack(c) for c in colours}
        return MaskFile(labels, "rgb", DAVIS_PALETTE.copy(), mapping)
    if len(colours) > MAX_PALETTE_ID:
        raise ValueError(f"{path}: an RGB mask with {len(colours)} distinct colours, more objects than a "
                         f"palette PNG holds ({MAX_PALETTE_ID}); colours blended at edges (anti-aliasing, "
                         "resizing, JPEG) make extra colours — paint each object in one flat colour, or give "
                         "a palette PNG or 16-bit label map")
    # colours of an earlier file of the same sequence keep their ids; new ones follow in order of appearance
    mapping: dict[int, tuple[int, int, int]] = dict(known or {})
    id_of = {c: i for i, c in mapping.items()}
    order = sorted((i for i, c in enumerate(uniq) if c != 0), key=lambda i: first[i])
    for i in order:
        colour = _unpack(int(uniq[i]))
        if colour not in id_of:
            id_of[colour] = max(mapping, default=0) + 1
            mapping[id_of[colour]] = colour
    if max(mapping, default=0) > MAX_PALETTE_ID:
        raise ValueError(f"{path}: {max(mapping)} distinct colours with the earlier masks, more objects than a "
                         f"palette PNG holds ({MAX_PALETTE_ID}); paint each object in one flat colour")
    lut = np.zeros(len(uniq), np.uint8)
    for i in order:
        lut[i] = id_of[_unpack(int(uniq[i]))]
    palette = DAVIS_PALETTE.copy()
    for obj, colour in mapping.items():
        palette[obj] = colour
    return MaskFile(lut[inverse].reshape(packed.shape), "rgb", palette, mapping)


def _unpack(c: int) -> tuple[int, int, int]:
    return (c >> 16) & 255, (c >> 8) & 255, c & 255


def read_mask(path: str | os.PathLike, known_colours: dict[int, tuple[int, int, int]] | None = None) -> MaskFile:
    """Read a label map without losing ids or objects (see the module notes for each file kind).

    ``known_colours``: for RGB masks of one sequence, the :attr:`MaskFile.colours` of an earlier frame, so
    the same colour gets the same id in every frame (new colours get the next free ids).

    Raises ``ValueError`` (one line naming the file) for what cannot be a label map: a JPEG (lossy:
    edges take colours of no object), float images, negative or > 16-bit values, an RGB mask with
    more than 255 colours; ``OSError`` when the file cannot be opened as an image."""
    path = Path(path)
    with Image.open(path) as img:
        img.load()
        if img.format in ("JPEG", "MPO"):
            raise ValueError(f"{path}: a JPEG mask is lossy (object edges take colours of no object); save the "
                             "mask as PNG")
        mode = img.mode
        if mode in ("P", "PA"):
            band = img if mode == "P" else img.getchannel(0)
            return MaskFile(np.array(band, dtype=np.uint8), "palette", _padded_palette(img.getpalette()))
        if mode in ("L", "LA", "1"):
            band = img if mode != "LA" else img.getchannel("L")
            return MaskFile(np.array(band, dtype=np.uint8), "grey", DAVIS_PALETTE.copy())
        if mode.startswith("I"):
            values = np.array(img)
            if values.ndim != 2:
                raise ValueError(f"{path}: expected a single-channel label map, got shape {values.shape}")
            return MaskFile(_ids_array(path, values), "grey16", DAVIS_PALETTE.copy())
        if mode == "F":
            raise ValueError(f"{path}: a floating-point image is not a label map; save integer ids as a PNG")
        return _read_rgb(path, img, known_colours)


def load_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map as ``H×W`` uint8 ids (palette, grey, or RGB PNG; see :func:`read_mask`).

    Raises ``ValueError`` for ids above 255 (a 16-bit label map): this reader's callers keep 8-bit ids;
    use :func:`read_mask` to keep them."""
    mf = read_mask(path)
    if mf.labels.dtype != np.uint8:
        raise ValueError(f"{path}: a 16-bit label map with ids up to {int(mf.labels.max())}; only ids 0..255 "
                         "are supported here — renumber the objects 1..K (at most 255)")
    return mf.labels


# ------------------------------------------------------------------------------------------ writing

def _check_ids(path: str | os.PathLike, mask: np.ndarray, limit: int, what: str) -> None:
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > limit):
        raise ValueError(f"{path}: ids {int(mask.min())}..{int(mask.max())} do not fit in {what} (0..{limit})")


def save_mask_png(path: str | os.PathLike, mask: np.ndarray, palette: bytes | np.ndarray | None = None) -> None:
    """Write a ``H×W`` label map (ids 0..255) as a palette PNG (atomically), DAVIS palette by default.

    Raises ``ValueError`` for ids outside 0..255 (they would wrap); :func:`save_label_png` writes those."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map, got shape {mask.shape}")
    _check_ids(path, mask, MAX_PALETTE_ID, "a palette PNG")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    if palette is None:
        palette = DAVIS_PALETTE_BYTES
    elif isinstance(palette, np.ndarray):
        palette = np.ascontiguousarray(palette, dtype=np.uint8).tobytes()
    img.putpalette(palette)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_label_png(path: str | os.PathLike, labels: np.ndarray,
                   palette: bytes | np.ndarray | None = None) -> None:
    """Write ids in the format that holds them: a uint8 map as a palette PNG (``palette``, DAVIS by
    default), a wider one (uint16 ids, e.g. read from a 16-bit label map) as a 16-bit greyscale PNG, so
    every frame of one sequence has the same format. Raises ``ValueError`` for ids outside 0..65535."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map, got shape {labels.shape}")
    if labels.dtype == np.uint8 or labels.dtype == np.bool_ or (
            labels.dtype != np.uint16 and (labels.size == 0 or 0 <= int(labels.min()) <= int(labels.max()) <= 255)):
        save_mask_png(path, labels, palette)
        return
    _check_ids(path, labels, MAX_16BIT_ID, "a 16-bit PNG")
    img = Image.fromarray(labels.astype(np.uint16))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
