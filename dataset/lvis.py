"""Minimal reader of LVIS / COCO-style instance annotations (``lvis_v1_train.json``) for S2M training.

Masks are decoded with ``pycocotools`` when it is installed; otherwise this module decodes them itself
(polygons filled with OpenCV, uncompressed and compressed RLE decoded in numpy), so pycocotools is optional.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from dataset.layout import DatasetLayoutError

try:
    import pycocotools.mask as _mask_utils
except ImportError:  # optional
    _mask_utils = None


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (6-bit chars, 5 value bits + continuation, deltas after the 2nd run)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts_to_mask(counts: list[int], h: int, w: int) -> np.ndarray:
    """Runs (alternating 0/1, starting with 0) over the column-major image → H×W uint8 {0,1}."""
    flat = np.zeros(h * w, np.uint8)
    pos = 0
    for i, run in enumerate(counts):
        if i % 2:
            flat[pos:pos + run] = 1
        pos += run
    return flat.reshape(w, h).T.copy()


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` (merged) → H×W uint8 {0,1}."""
    mask = np.zeros((h, w), np.uint8)
    pts = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32) for p in polygons if len(p) >= 6]
    if pts:
        cv2.fillPoly(mask, pts, 1)
    return mask


def decode_segmentation(segm, h: int, w: int) -> np.ndarray:
    """A COCO/LVIS ``segmentation`` (polygons, uncompressed RLE or compressed RLE) → H×W uint8 {0,1}."""
    if _mask_utils is not None:
        if isinstance(segm, list):
            rle = _mask_utils.merge(_mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm["counts"], list):
            rle = _mask_utils.frPyObjects(segm, h, w)
        else:
            rle = segm
        return np.asarray(_mask_utils.decode(rle), np.uint8)
    if isinstance(segm, list):
        return polygons_to_mask(segm, h, w)
    counts = segm["counts"]
    if not isinstance(counts, list):
        counts = rle_string_to_counts(counts)
    return rle_counts_to_mask(counts, h, w)


class LVIS:
    """Index of an LVIS json: ``anns`` (id → annotation), ``imgs`` (id → image record), per-image annotations."""

    def __init__(self, annotation_path: str | os.PathLike):
        path = Path(annotation_path).expanduser()
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: LVIS annotation file not found; expected <lvis_root>/lvis_v1_train.json")
        try:
            dataset = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DatasetLayoutError(f"{path}: not a readable json file ({type(e).__name__}); re-download it") from None
        if not isinstance(dataset, dict) or "annotations" not in dataset or "images" not in dataset:
            raise DatasetLayoutError(f"{path}: not a COCO/LVIS annotation file (needs 'images' and 'annotations')")
        self.dataset = dataset
        self.anns = {ann["id"]: ann for ann in dataset["annotations"]}
        self.imgs = {img["id"]: img for img in dataset["images"]}
        self.img_ann_map: dict[int, list[dict]] = defaultdict(list)
        for ann in dataset["annotations"]:
            self.img_ann_map[ann["image_id"]].append(ann)

    def get_ann_ids(self, img_ids=None, area_rng=None) -> list[int]:
        """Annotation ids (of the given images, else all) whose area is strictly inside ``area_rng``."""
        anns = self.dataset["annotations"] if img_ids is None else \
            [a for i in img_ids for a in self.img_ann_map[i]]
        lo, hi = area_rng if area_rng is not None else (0, float("inf"))
        return [a["id"] for a in anns if lo < a["area"] < hi]

    def load_img_ann(self, ann_id: int) -> tuple[str, np.ndarray]:
        """(image file name from ``coco_url``, binary mask H×W uint8 {0,1}) of one annotation."""
        ann = self.anns[ann_id]
        img = self.imgs[ann["image_id"]]
        name = img.get("coco_url", img.get("file_name", "")).split("/")[-1]
        return name, decode_segmentation(ann["segmentation"], img["height"], img["width"])
