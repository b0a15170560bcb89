"""Whole-video DAVIS reader (``DAVISTestDataset``): all frames and the one-hot ground truth of a video."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from dataset.layout import DatasetLayoutError, require_dir, require_file
from dataset.onehot_util import all_to_onehot
from util.image_util import normalize_frames
from util.palette import load_mask_png

DAVIS_LAYOUT = ("<root>/JPEGImages/<resolution>/<video>/%05d.jpg, <root>/Annotations/<resolution>/<video>/%05d.png "
                "and <root>/ImageSets/<imset> (e.g. ../DAVIS/2017/trainval with ImageSets/2017/train.txt)")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


class DAVISTestDataset(Dataset):
    """Items: ``rgb`` T×3×H×W normalised frames, ``gt`` K×T×1×H×W one-hot masks (K objects = labels of
    frame 0, or one object with ``single_object``), ``info`` (``name``, ``num_frames``, ``size_480p``,
    ``labels``). Missing annotation files (test sets) give empty masks. A resolution other than
    ``480p`` is resized so the shorter side is 600 (bicubic frames, nearest masks), as the original.
    """

    def __init__(self, root: str | os.PathLike, imset: str = "2017/val.txt", resolution: str = "480p",
                 single_object: bool = False, target_name: str | None = None):
        self.root = Path(root).expanduser()
        self.image_dir = require_dir(self.root / "JPEGImages" / resolution, "DAVIS frame folder", DAVIS_LAYOUT)
        self.mask_dir = require_dir(self.root / "Annotations" / resolution, "DAVIS annotation folder", DAVIS_LAYOUT)
        self.mask480_dir = self.root / "Annotations" / "480p"
        imset_file = require_file(self.root / "ImageSets" / imset, "DAVIS image-set list", DAVIS_LAYOUT)
        self.resolution = resolution
        self.single_object = single_object

        self.videos: list[str] = []
        self.num_frames: dict[str, int] = {}
        self.size_480p: dict[str, tuple[int, int]] = {}
        for line in imset_file.read_text().splitlines():
            video = line.strip()
            if not video or (target_name is not None and video != target_name):
                continue
            frames_dir = self.image_dir / video
            if not frames_dir.is_dir():
                raise DatasetLayoutError(f"{frames_dir}: video listed in {imset_file} has no frame folder; "
                                         f"expected {DAVIS_LAYOUT}")
            self.videos.append(video)
            self.num_frames[video] = len(_frame_files(frames_dir))
            first_480 = self.mask480_dir / video / "00000.png"
            if first_480.is_file():
                self.size_480p[video] = tuple(load_mask_png(first_480).shape)
            else:
                w, h = Image.open(_frame_files(frames_dir)[0]).size
                self.size_480p[video] = (h, w)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        video = self.videos[index]
        frame_files = _frame_files(self.image_dir / video)
        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in frame_files])
        masks = []
        for f in range(len(frame_files)):
            mask_file = self.mask_dir / video / f"{f:05d}.png"
            masks.append(load_mask_png(mask_file) if mask_file.is_file() else np.zeros(frames.shape[1:3], np.uint8))
        masks = np.stack(masks)

        if self.single_object:
            labels = np.array([1])
            masks = (masks > 0.5).astype(np.uint8)
        else:
            labels = np.unique(masks[0])
            labels = labels[labels != 0]
        rgb = normalize_frames(frames)
        gt = torch.from_numpy(all_to_onehot(masks, labels)).float()
        if self.resolution != "480p":
            rgb = _resize_short_side(rgb, 600, "bicubic")
            gt = _resize_short_side(gt, 600, "nearest")
        info = {"name": video, "num_frames": len(frame_files), "size_480p": self.size_480p[video],
                "labels": labels}
        return {"rgb": rgb, "gt": gt.unsqueeze(2), "info": info}


def _resize_short_side(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``…×H×W`` → shorter side ``size`` (aspect kept, as torchvision ``Resize(int)``)."""
    h, w = x.shape[-2:]
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    kwargs = {"align_corners": False} if mode == "bicubic" else {}
    out = F.interpolate(flat, size=new, mode=mode, **kwargs)
    return out.reshape(*lead, *new)
