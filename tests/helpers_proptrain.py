"""Tiny generated training data for the propagation and S2M trainer tests (written into tmp folders)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CROP = 32  # training crop of the tests (the original: 384 / 480)
VIDEO_SIZE = (64, 48)  # (W, H)
STATIC_DIRS = (("fss", 0), ("DUTS-TR", 1), ("DUTS-TE", 1), ("ecssd", 1), ("BIG_small", 1), ("HRSOD_small", 1))


def write_static_pair(folder: Path, name: str, rng: np.random.Generator, size: tuple[int, int] = (40, 36)) -> None:
    """``<folder>/<name>.jpg`` (noise + a bright ellipse) and ``<name>.png`` (its 0/255 mask)."""
    w, h = size
    folder.mkdir(parents=True, exist_ok=True)
    image = (rng.random((h, w, 3)) * 120).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3)))
    cv2.ellipse(mask, centre, (w // 4, h // 5), float(rng.integers(0, 180)), 0, 360, 255, -1)
    image[mask > 0] = (200, 80, 40)
    Image.fromarray(image).save(folder / f"{name}.jpg", quality=95)
    Image.fromarray(mask).save(folder / f"{name}.png")


def make_static_root(root: Path, per_set: int = 2, seed: int = 0) -> Path:
    """The six static sets of ``--static_root`` (FSS layout for ``fss``, flat for the others)."""
    rng = np.random.default_rng(seed)
    for name, method in STATIC_DIRS:
        for i in range(per_set):
            folder = root / name / f"class{i % 2}" if method == 0 else root / name
            write_static_pair(folder, f"{name}_{i}", rng)
    return root


def _videos(tmp: Path, num_videos: int, num_frames: int, seed: int) -> Path:
    from dataset.synthetic import generate_davis
    generate_davis(tmp, num_sequences=1, num_train_sequences=num_videos - 1, num_frames=num_frames,
                   size=VIDEO_SIZE, num_objects=(2, 1, 3), seed=seed)
    return tmp


def make_bl30k_root(root: Path, num_videos: int = 2, num_frames: int = 5, seed: int = 1) -> Path:
    """``<root>/{JPEGImages,Annotations}/<video>/%05d.{jpg,png}``."""
    tmp = _videos(root.parent / f"{root.name}_gen", num_videos, num_frames, seed)
    root.mkdir(parents=True, exist_ok=True)
    for kind in ("JPEGImages", "Annotations"):
        shutil.move(str(tmp / kind / "480p"), str(root / kind))
    shutil.rmtree(tmp)
    return root


def make_davis_youtube_roots(base: Path, num_frames: int = 5) -> tuple[Path, Path]:
    """A DAVIS root (``2017/trainval`` with a train list) and a YouTube-VOS root (``train_480p``)."""
    davis = base / "DAVIS"
    _videos(davis / "2017" / "trainval", 3, num_frames, seed=2)
    youtube = base / "YouTube"
    make_bl30k_root(youtube / "train_480p", num_videos=2, num_frames=num_frames, seed=3)
    return davis, youtube


def encode_rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of run lengths (inverse of ``dataset.lvis.rle_string_to_counts``)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not ch & 0x10) or (x == -1 and ch & 0x10))
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def mask_to_rle_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a {0,1} mask, starting with a (possibly empty) run of zeros."""
    flat = mask.T.ravel()
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return counts


def make_lvis_root(root: Path, seed: int = 0) -> Path:
    """``<root>/lvis_v1_train.json`` (2 images; polygon, uncompressed-RLE and compressed-RLE instances, one
    too small to be used) and ``<root>/train2017/*.jpg``."""
    import json
    rng = np.random.default_rng(seed)
    (root / "train2017").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    h, w = 72, 80
    for image_id in (1, 2):
        name = f"{image_id:012d}.jpg"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / "train2017" / name)
        images.append({"id": image_id, "height": h, "width": w, "coco_url": f"http://images.cocodataset.org/train2017/{name}"})
    square = np.zeros((h, w), np.uint8)
    square[10:70, 5:65] = 1
    blob = np.zeros((h, w), np.uint8)
    cv2.circle(blob, (40, 36), 30, 1, -1)
    annotations.append({"id": 11, "image_id": 1, "area": 60 * 60, "bbox": [5, 10, 60, 60],
                        "segmentation": [[5, 10, 64, 10, 64, 69, 5, 69]]})
    annotations.append({"id": 12, "image_id": 1, "area": float(blob.sum()), "bbox": [10, 6, 60, 60],
                        "segmentation": {"size": [h, w], "counts": mask_to_rle_counts(blob)}})
    annotations.append({"id": 21, "image_id": 2, "area": float(square.sum()), "bbox": [5, 10, 60, 60],
                        "segmentation": {"size": [h, w], "counts": encode_rle_string(mask_to_rle_counts(square))}})
    annotations.append({"id": 22, "image_id": 2, "area": 100.0, "bbox": [0, 0, 10, 10],
                        "segmentation": [[0, 0, 9, 0, 9, 9, 0, 9]]})
    (root / "lvis_v1_train.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                         "categories": []}))
    return root
