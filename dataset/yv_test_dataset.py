"""YouTube-VOS test reader (``YouTubeVOSTestDataset``, Mask-Propagation layout): every frame of a video,
the sparse annotations, and the label remapping.

Layout: frames ``<root>/all_frames/<split>_all_frames/JPEGImages/<video>/<name>.jpg`` (every frame),
annotations ``<root>/<split>/Annotations/<video>/<name>.png`` (only the frames where objects first
appear; ids need not be consecutive, 0 = no label).

Items: ``rgb`` T×3×H×W normalised and resized so the shorter side is 480 (bicubic, on the normalised
tensor), ``gt`` K×T×1×H×W one-hot of the annotations (nearest resize; frames without annotation are
empty), ``info``: ``name``, ``frames`` (file names), ``size`` (original H, W), ``gt_obj`` {frame index:
ids annotated there}, ``labels`` (sorted ids of the video), ``label_convert`` {id: 1..K},
``label_backward`` {1..K: id}.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dataset.davis_test_dataset import _resize_short_side
from dataset.layout import DatasetLayoutError, require_dir, sorted_listdir
from dataset.onehot_util import all_to_onehot
from util.image_util import normalize_frames
from util.palette import load_mask_png

YV_LAYOUT = ("<yv>/all_frames/<split>_all_frames/JPEGImages/<video>/*.jpg and <yv>/<split>/Annotations/<video>/*.png "
             "(e.g. ../YouTube with valid/ and all_frames/valid_all_frames/)")
SHORT_SIDE = 480


class YouTubeVOSTestDataset(Dataset):
    def __init__(self, data_root: str | os.PathLike, split: str = "valid", short_side: int | None = SHORT_SIDE):
        root = Path(data_root).expanduser()
        self.image_dir = require_dir(root / "all_frames" / f"{split}_all_frames" / "JPEGImages",
                                     "YouTube-VOS all-frames folder", YV_LAYOUT)
        self.mask_dir = require_dir(root / split / "Annotations", "YouTube-VOS annotation folder", YV_LAYOUT)
        self.short_side = short_side
        self.videos: list[str] = []
        self.frames: dict[str, list[str]] = {}
        self.shape: dict[str, tuple[int, int]] = {}
        for video in sorted_listdir(self.image_dir):
            frames = [f for f in sorted_listdir(self.image_dir / video) if f.lower().endswith(".jpg")]
            masks = sorted((self.mask_dir / video).glob("*.png")) if (self.mask_dir / video).is_dir() else []
            if not frames or not masks:
                raise DatasetLayoutError(f"{self.image_dir / video}: video without frames or without an annotation "
                                         f"in {self.mask_dir / video}; expected {YV_LAYOUT}")
            self.videos.append(video)
            self.frames[video] = frames
            with Image.open(masks[0]) as im:
                self.shape[video] = (im.size[1], im.size[0])

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        video = self.videos[index]
        frames = self.frames[video]
        size = self.shape[video]
        images, masks, gt_obj = [], [], {}
        for i, name in enumerate(frames):
            with Image.open(self.image_dir / video / name) as im:
                images.append(normalize_frames(np.array(im.convert("RGB")))[0])
            mask_file = self.mask_dir / video / (Path(name).stem + ".png")
            if mask_file.is_file():
                mask = load_mask_png(mask_file)
                ids = np.unique(mask)
                gt_obj[i] = [int(v) for v in ids if v != 0]
                masks.append(mask)
            else:
                masks.append(np.zeros(size, np.uint8))
        masks = np.stack(masks)
        labels = [int(v) for v in np.unique(masks) if v != 0]
        rgb = torch.stack(images, 0)
        gt = torch.from_numpy(all_to_onehot(masks, labels)).float()
        if self.short_side:
            # resize the normalised frames (bicubic) and the one-hot masks (nearest), as the original
            rgb = _resize_short_side(rgb, self.short_side, "bicubic")
            if len(labels):
                gt = _resize_short_side(gt, self.short_side, "nearest")
            else:
                gt = gt.new_zeros((0, len(frames), *rgb.shape[-2:]))
        info = {"name": video, "frames": frames, "size": size, "gt_obj": gt_obj, "labels": labels,
                "label_convert": {v: i + 1 for i, v in enumerate(labels)},
                "label_backward": {i + 1: v for i, v in enumerate(labels)}}
        return {"rgb": rgb, "gt": gt.unsqueeze(2), "info": info}
