"""Pseudo-videos from static segmentation images (propagation stage 0, as in Mask-Propagation).

Layouts: ``method=0`` FSS-1000 (``<root>/<class>/<n>.jpg`` + ``<n>.png``), ``method=1`` flat
(``<root>/<name>.jpg`` + ``<name>.png``; DUTS, ECSSD, BIG, HRSOD). The mask is 8-bit grayscale (soft masks
allowed). One image becomes three frames: a transform shared by the three (scale, flip, colour), then a
per-frame affine + resize + crop + colour jitter, and with probability 0.33 a random thin-plate-spline warp.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from dataset.layout import DatasetLayoutError, open_image, require_dir, sorted_listdir
from dataset.range_transform import im_mean, im_normalization
from dataset.reseed import reseed
from dataset.tps import random_tps_warp

STATIC_LAYOUTS = {0: "<root>/<class>/<n>.jpg + <n>.png (FSS-1000 layout)",
                  1: "<root>/<name>.jpg + <name>.png (flat layout)"}
TPS_PROBABILITY = 0.33
TPS_SCALE = 0.02


def list_static_images(root: Path, method: int) -> list[Path]:
    """The ``.jpg`` images of a static set in ``method``'s layout (those with a ``.png`` mask next to them)."""
    if method == 0:
        folders = [root / c for c in sorted_listdir(root) if (root / c).is_dir()]
    elif method == 1:
        folders = [root]
    else:
        raise ValueError(f"static dataset method must be 0 (FSS layout) or 1 (flat layout), got {method}")
    images = []
    for folder in folders:
        images += [folder / f for f in sorted_listdir(folder)
                   if f.lower().endswith(".jpg") and (folder / f).with_suffix(".png").is_file()]
    return images


class StaticTransformDataset(Dataset):
    """``len = #images``. Items (S = ``crop_size``): ``rgb`` 3×3×S×S normalised, ``gt`` 3×1×S×S soft mask in
    [0, 1], ``cls_gt`` 3×S×S int64 (``gt > 0.5``), ``info`` {name}."""

    def __init__(self, root: str | os.PathLike, method: int = 0, crop_size: int = 384, verbose: bool = True):
        self.root = require_dir(root, "static image folder", STATIC_LAYOUTS.get(method, "?"))
        self.method = method
        self.crop_size = crop_size
        self.im_list = list_static_images(self.root, method)
        if verbose:
            print(f"{len(self.im_list)} images found in {self.root}", flush=True)
        if not self.im_list:
            raise DatasetLayoutError(f"{self.root}: no image with a mask; expected {STATIC_LAYOUTS[method]}")

        # per frame (image and mask share the parameters)
        self.pair_im_lone_transform = transforms.ColorJitter(0.1, 0.05, 0.05, 0)  # no hue change here
        self.pair_im_dual_transform = transforms.Compose([
            transforms.RandomAffine(degrees=20, scale=(0.9, 1.1), shear=10, interpolation=InterpolationMode.BICUBIC,
                                    fill=im_mean),
            transforms.Resize(crop_size, InterpolationMode.BICUBIC),
            transforms.RandomCrop((crop_size, crop_size), pad_if_needed=True, fill=im_mean)])
        # bicubic on the (soft) mask too, as the original
        self.pair_gt_dual_transform = transforms.Compose([
            transforms.RandomAffine(degrees=20, scale=(0.9, 1.1), shear=10, interpolation=InterpolationMode.BICUBIC,
                                    fill=0),
            transforms.Resize(crop_size, InterpolationMode.NEAREST),
            transforms.RandomCrop((crop_size, crop_size), pad_if_needed=True, fill=0)])
        # per sequence (all three frames)
        self.all_im_lone_transform = transforms.Compose([transforms.ColorJitter(0.1, 0.05, 0.05, 0.05),
                                                         transforms.RandomGrayscale(0.05)])
        self.all_im_dual_transform = transforms.Compose([transforms.RandomAffine(degrees=0, scale=(0.8, 1.5),
                                                                                 fill=im_mean),
                                                         transforms.RandomHorizontalFlip()])
        self.all_gt_dual_transform = transforms.Compose([transforms.RandomAffine(degrees=0, scale=(0.8, 1.5), fill=0),
                                                         transforms.RandomHorizontalFlip()])
        self.im_transform = transforms.Compose([transforms.ToTensor(), im_normalization])
        self.gt_transform = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.im_list)

    def __getitem__(self, idx: int) -> dict:
        path = self.im_list[idx]
        image = open_image(path, "RGB")
        mask = open_image(path.with_suffix(".png"), "L")
        sequence_seed = np.random.randint(2147483647)
        images, masks = [], []
        for _ in range(3):
            reseed(sequence_seed)
            this_im = self.all_im_lone_transform(self.all_im_dual_transform(image))
            reseed(sequence_seed)
            this_gt = self.all_gt_dual_transform(mask)

            pairwise_seed = np.random.randint(2147483647)
            reseed(pairwise_seed)
            this_im = self.pair_im_lone_transform(self.pair_im_dual_transform(this_im))
            reseed(pairwise_seed)
            this_gt = self.pair_gt_dual_transform(this_gt)

            # TPS only some of the time (it is the slowest step of data loading)
            if np.random.rand() < TPS_PROBABILITY:
                this_im, this_gt = random_tps_warp(this_im, this_gt, scale=TPS_SCALE)
            images.append(self.im_transform(this_im))
            masks.append(self.gt_transform(this_gt))
        rgb = torch.stack(images, 0)
        gt = torch.stack(masks, 0)
        cls_gt = (gt[:, 0] > 0.5).long()
        return {"rgb": rgb, "gt": gt, "cls_gt": cls_gt, "info": {"name": str(path)}}
