"""Whole-video BL30K reader (``BLTestDataset``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Collection

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dataset.layout import DatasetLayoutError, require_dir, sorted_listdir
from dataset.onehot_util import all_to_onehot
from util.image_util import normalize_frames
from util.palette import load_mask_png

BL_LAYOUT = "<root>/JPEGImages/<video>/%05d.jpg and <root>/Annotations/<video>/%05d.png (e.g. ../BL30K)"


class BLTestDataset(Dataset):
    """Items like :class:`dataset.davis_test_dataset.DAVISTestDataset` (``rgb`` T×3×H×W, ``gt``
    K×T×1×H×W, ``info``), the K labels gathered from **all** frames. Videos are sorted by name;
    ``start``/``end`` (both given) keep the inclusive slice ``[start, end]``; ``subset`` keeps only
    the named videos."""

    def __init__(self, root: str | os.PathLike, subset: Collection[str] | None = None,
                 start: int | None = None, end: int | None = None):
        self.root = Path(root).expanduser()
        self.image_dir = require_dir(self.root / "JPEGImages", "BL30K frame folder", BL_LAYOUT)
        self.mask_dir = require_dir(self.root / "Annotations", "BL30K annotation folder", BL_LAYOUT)
        self.videos = [v for v in sorted_listdir(self.image_dir)
                       if (self.image_dir / v).is_dir() and (subset is None or v in subset)]
        print(f"Total amount of videos: {len(self.videos)}")
        if start is not None and end is not None:
            print(f"Taking crop from {start} to {end}.")
            self.videos = self.videos[start:end + 1]
            print(f"New size: {len(self.videos)}")
        self.num_frames = {v: len(list((self.image_dir / v).glob("*.jpg"))) for v in self.videos}

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        video = self.videos[index]
        frame_files = sorted((self.image_dir / video).glob("*.jpg"))
        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in frame_files])
        masks = []
        for f in range(len(frame_files)):
            mask_file = self.mask_dir / video / f"{f:05d}.png"
            if not mask_file.is_file():
                raise DatasetLayoutError(f"{mask_file}: annotation missing; expected {BL_LAYOUT}")
            masks.append(load_mask_png(mask_file))
        masks = np.stack(masks)
        labels = np.unique(masks)
        labels = labels[labels != 0]
        gt = torch.from_numpy(all_to_onehot(masks, labels)).float().unsqueeze(2)
        info = {"name": video, "num_frames": len(frame_files), "labels": labels}
        return {"rgb": normalize_frames(frames), "gt": gt, "info": info}
