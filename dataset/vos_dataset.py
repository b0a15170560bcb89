"""Three-frame training samples from videos (DAVIS, YouTube-VOS, BL30K) for propagation training (as in Mask-Propagation).

Layout: ``im_root/<video>/<frame>.jpg`` and ``gt_root/<video>/<frame>.png`` (palette label maps, 0 =
background). Each item picks three frames at most ``max_jump`` apart (:func:`sample_frame_indices`), applies
a transform shared by the three frames (flip + random resized crop, colour jitter, grayscale) and a per-frame
one (affine, slight colour jitter), then a target object and, when present, a second object.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from dataset.layout import DatasetLayoutError, open_image, require_dir, sorted_listdir
from dataset.range_transform import im_mean, im_normalization
from dataset.reseed import reseed

VIDEO_LAYOUT = "<root>/<video>/<frame>.jpg frames and <gt root>/<video>/<frame>.png palette label maps"
MAX_TRIALS = 5
# BL30K object filter (pixels in the first sampled frame / in the other two)
BL_MIN_AREA = 10 * 10
BL_LARGE_AREA = 30 * 30
BL_SMALL_ELSEWHERE = 20 * 20


def sample_frame_indices(num_frames: int, max_jump: int, rng=np.random) -> list[int]:
    """Three frame indices in ``[0, num_frames)``: ``start``, then two forward jumps of 1…``max_jump`` (+1
    at most), clipped so that the samples do not crowd the end of the video; reversed in time with
    probability 0.5. Indices are monotonic but may repeat near the end of the video (as in the original)."""
    this_max_jump = min(num_frames, max_jump)
    start = rng.randint(num_frames - this_max_jump + 1)
    f1 = start + rng.randint(this_max_jump + 1) + 1
    f1 = min(f1, num_frames - this_max_jump, num_frames - 1)
    f2 = f1 + rng.randint(this_max_jump + 1) + 1
    f2 = min(f2, num_frames - this_max_jump // 2, num_frames - 1)
    indices = [start, f1, f2]
    if rng.rand() < 0.5:
        indices = indices[::-1]
    return indices


def bl_good_labels(masks: list[np.ndarray], labels: Iterable[int]) -> list[int]:
    """BL30K rule: keep a label of the first frame if it has > 10×10 pixels there and either > 30×30 there
    or < 20×20 in both other frames (small objects are fine only if they are small throughout)."""
    good = []
    for label in labels:
        area = int((masks[0] == label).sum())
        if area > BL_MIN_AREA:
            if area > BL_LARGE_AREA or max(int((masks[1] == label).sum()), int((masks[2] == label).sum())) \
                    < BL_SMALL_ELSEWHERE:
                good.append(int(label))
    return good


class VOSDataset(Dataset):
    """``len = #videos`` (videos with ≥ 3 frames, restricted to ``subset`` if given).

    Items (S = ``crop_size``): ``rgb`` 3×3×S×S normalised; ``gt`` 3×1×S×S target object; ``sec_gt`` 3×1×S×S
    second object (zeros if none); ``cls_gt`` 3×S×S int64 (0 bg, 1 target, 2 second); ``selector`` (2,)
    = [1, 1] or [1, 0]; ``info`` {name, frames}. ``max_jump`` may be changed between epochs (skip curriculum).
    """

    def __init__(self, im_root: str | os.PathLike, gt_root: str | os.PathLike, max_jump: int, is_bl: bool,
                 subset: Iterable[str] | None = None, crop_size: int = 384, verbose: bool = True):
        self.im_root = require_dir(im_root, "frame folder", VIDEO_LAYOUT)
        self.gt_root = require_dir(gt_root, "annotation folder", VIDEO_LAYOUT)
        self.max_jump = max_jump
        self.is_bl = is_bl
        self.crop_size = crop_size
        subset = None if subset is None else set(subset)

        self.videos: list[str] = []
        self.frames: dict[str, list[str]] = {}
        vid_list = [v for v in sorted_listdir(self.im_root) if (self.im_root / v).is_dir()]
        for video in vid_list:
            if subset is not None and video not in subset:
                continue
            frames = [f for f in sorted_listdir(self.im_root / video) if f.lower().endswith(".jpg")]
            if len(frames) < 3:
                continue
            self.frames[video] = frames
            self.videos.append(video)
        if verbose:
            print(f"{len(self.videos)} out of {len(vid_list)} videos accepted in {self.im_root}.", flush=True)
        if not self.videos:
            raise DatasetLayoutError(f"{self.im_root}: no video with at least 3 frames"
                                     f"{' in the subset' if subset is not None else ''}; expected {VIDEO_LAYOUT}")

        # per frame (image and mask share the parameters, the three frames do not)
        self.pair_im_lone_transform = transforms.ColorJitter(0.01, 0.01, 0.01, 0)
        self.pair_im_dual_transform = transforms.RandomAffine(degrees=15, shear=10,
                                                              interpolation=InterpolationMode.BICUBIC, fill=im_mean)
        self.pair_gt_dual_transform = transforms.RandomAffine(degrees=15, shear=10,
                                                              interpolation=InterpolationMode.NEAREST, fill=0)
        # per sequence (all three frames)
        self.all_im_lone_transform = transforms.Compose([transforms.ColorJitter(0.1, 0.03, 0.03, 0),
                                                         transforms.RandomGrayscale(0.05)])
        # BL30K frames are larger (768×512): a wider range of crop scales
        scale = (0.25, 1.00) if is_bl else (0.36, 1.00)
        self.all_im_dual_transform = transforms.Compose([
            transforms.RandomHorizontalFlip(),
            transforms.RandomResizedCrop((crop_size, crop_size), scale=scale, interpolation=InterpolationMode.BICUBIC)])
        self.all_gt_dual_transform = transforms.Compose([
            transforms.RandomHorizontalFlip(),
            transforms.RandomResizedCrop((crop_size, crop_size), scale=scale, interpolation=InterpolationMode.NEAREST)])
        self.final_im_transform = transforms.Compose([transforms.ToTensor(), im_normalization])

    def __len__(self) -> int:
        return len(self.videos)

    def _load_frame(self, video: str, frame: str, sequence_seed: int) -> tuple[torch.Tensor, np.ndarray]:
        stem = Path(frame).stem
        reseed(sequence_seed)
        image = open_image(self.im_root / video / f"{stem}.jpg", "RGB")
        image = self.all_im_lone_transform(self.all_im_dual_transform(image))
        reseed(sequence_seed)
        gt = self.all_gt_dual_transform(open_image(self.gt_root / video / f"{stem}.png", "P"))

        pairwise_seed = np.random.randint(2147483647)
        reseed(pairwise_seed)
        image = self.pair_im_lone_transform(self.pair_im_dual_transform(image))
        reseed(pairwise_seed)
        gt = self.pair_gt_dual_transform(gt)
        return self.final_im_transform(image), np.array(gt)

    def __getitem__(self, idx: int) -> dict:
        video = self.videos[idx]
        frames = self.frames[video]
        info: dict = {"name": video}
        target_object, second_object = -1, None
        for _ in range(MAX_TRIALS):
            indices = sample_frame_indices(len(frames), self.max_jump)
            info["frames"] = [Path(frames[i]).stem + ".jpg" for i in indices]
            sequence_seed = np.random.randint(2147483647)
            loaded = [self._load_frame(video, frames[i], sequence_seed) for i in indices]
            images = torch.stack([im for im, _ in loaded], 0)
            masks = [gt for _, gt in loaded]

            labels = [int(x) for x in np.unique(masks[0]) if x != 0]
            if self.is_bl:
                labels = bl_good_labels(masks, labels)
            if labels:
                target_object = int(np.random.choice(labels))
                others = [x for x in labels if x != target_object]
                second_object = int(np.random.choice(others)) if others else None
                break
            target_object, second_object = -1, None  # all black if no object is usable

        stacked = np.stack(masks, 0)
        tar_masks = (stacked == target_object).astype(np.float32)[:, None]
        if second_object is not None:
            sec_masks = (stacked == second_object).astype(np.float32)[:, None]
            selector = torch.tensor([1.0, 1.0])
        else:
            sec_masks = np.zeros_like(tar_masks)
            selector = torch.tensor([1.0, 0.0])
        cls_gt = np.zeros(stacked.shape, dtype=np.int64)
        cls_gt[tar_masks[:, 0] > 0.5] = 1
        cls_gt[sec_masks[:, 0] > 0.5] = 2
        info["objects"] = [target_object, -1 if second_object is None else second_object]
        return {"rgb": images, "gt": torch.from_numpy(tar_masks), "cls_gt": torch.from_numpy(cls_gt),
                "sec_gt": torch.from_numpy(sec_masks), "selector": selector, "info": info}
