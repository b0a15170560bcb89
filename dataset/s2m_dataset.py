"""S2M training samples (as in Scribble-to-Mask): an image, its object mask, a "previous mask" (empty, or the ground truth
perturbed to a random IoU) and synthetic positive / negative scribbles correcting it.

:class:`S2MStaticDataset` reads the static sets (FSS layout or flat, see :mod:`dataset.static_dataset`);
:class:`LVISTransformDataset` reads LVIS instances (``lvis_v1_train.json`` + ``train2017/``) and sometimes
involves a second instance of the same image (its scribbles as negatives, or its perturbed mask added to the
previous mask).

Items (S = ``crop_size``): ``rgb`` 3×S×S normalised, ``gt`` 1×S×S {0,1}, ``cls_gt`` S×S int64, ``seg`` 1×S×S
previous mask in [0, 1], ``srb`` 2×S×S {0,1} (positive, negative), ``info`` {name}.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from dataset.layout import DatasetLayoutError, open_image, require_dir
from dataset.lvis import LVIS
from dataset.mask_perturb import perturb_mask
from dataset.range_transform import im_mean, im_normalization
from dataset.reseed import reseed
from dataset.scribble import get_scribble
from dataset.static_dataset import STATIC_LAYOUTS, list_static_images

FROM_ZERO_PROBABILITY = 0.33
IOU_RANGE = (0.4, 0.95)
LVIS_MIN_AREA = 50 * 50
LVIS_OTHER_MIN_AREA = 30 * 30


def _dual_transforms(crop_size: int, scale: tuple[float, float]):
    image_t = transforms.Compose([
        transforms.RandomAffine(degrees=20, scale=scale, shear=10, interpolation=InterpolationMode.BILINEAR,
                                fill=im_mean),
        transforms.Resize(crop_size, InterpolationMode.BILINEAR),
        transforms.RandomCrop((crop_size, crop_size), pad_if_needed=True, fill=im_mean),
        transforms.RandomHorizontalFlip()])
    mask_t = transforms.Compose([
        transforms.RandomAffine(degrees=20, scale=scale, shear=10, interpolation=InterpolationMode.NEAREST, fill=0),
        transforms.Resize(crop_size, InterpolationMode.NEAREST),
        transforms.RandomCrop((crop_size, crop_size), pad_if_needed=True, fill=0),
        transforms.RandomHorizontalFlip()])
    return image_t, mask_t


class _S2MBase(Dataset):
    def __init__(self, crop_size: int, scale: tuple[float, float]):
        self.crop_size = crop_size
        self.im_lone_transform = transforms.Compose([transforms.ColorJitter(0.1, 0.03, 0.03, 0),
                                                     transforms.RandomGrayscale(0.05)])
        self.im_dual_transform, self.gt_dual_transform = _dual_transforms(crop_size, scale)
        self.final_im_transform = transforms.Compose([transforms.ToTensor(), im_normalization])
        self.final_gt_transform = transforms.ToTensor()

    @staticmethod
    def previous_mask(gt_np: np.ndarray, from_zero: bool) -> np.ndarray:
        if from_zero:
            return np.zeros_like(gt_np)
        iou_target = np.random.rand() * (IOU_RANGE[1] - IOU_RANGE[0]) + IOU_RANGE[0]
        return perturb_mask(gt_np, iou_target=iou_target)

    def pack(self, im: Image.Image, gt: Image.Image, seg: np.ndarray, pos: np.ndarray, neg: np.ndarray,
             name: str) -> dict:
        gt_t = self.final_gt_transform(gt)
        srb = torch.stack([torch.from_numpy(pos), torch.from_numpy(neg)], 0).float()
        return {"rgb": self.final_im_transform(im), "gt": gt_t, "cls_gt": (gt_t > 0.5).long()[0],
                "seg": self.final_gt_transform(seg), "srb": srb, "info": {"name": name}}


class S2MStaticDataset(_S2MBase):
    """``len = #images`` of one static set (``method`` 0: FSS layout, 1: flat)."""

    def __init__(self, root: str | os.PathLike, method: int = 0, crop_size: int = 480, verbose: bool = True):
        super().__init__(crop_size, scale=(0.8, 1.25))
        self.root = require_dir(root, "static image folder", STATIC_LAYOUTS.get(method, "?"))
        self.im_list = list_static_images(self.root, method)
        if verbose:
            print(f"{len(self.im_list)} images found in {self.root}", flush=True)
        if not self.im_list:
            raise DatasetLayoutError(f"{self.root}: no image with a mask; expected {STATIC_LAYOUTS[method]}")

    def __len__(self) -> int:
        return len(self.im_list)

    def __getitem__(self, idx: int) -> dict:
        path = self.im_list[idx]
        im = open_image(path, "RGB")
        gt = open_image(path.with_suffix(".png"), "L")
        seed = np.random.randint(2147483647)
        reseed(seed)
        im = self.im_lone_transform(self.im_dual_transform(im))
        reseed(seed)
        gt = self.gt_dual_transform(gt)
        gt_np = np.array(gt)
        from_zero = np.random.rand() < FROM_ZERO_PROBABILITY
        seg = self.previous_mask(gt_np, from_zero)
        pos, neg = get_scribble(seg, gt_np, from_zero=from_zero)
        return self.pack(im, gt, seg, pos, neg, str(path))


class LVISTransformDataset(_S2MBase):
    """``len = #annotations`` with area > 50·50; images ``<image_root>/<file of coco_url>``."""

    def __init__(self, image_root: str | os.PathLike, lvis: LVIS, crop_size: int = 480, verbose: bool = True):
        super().__init__(crop_size, scale=(0.8, 1.0))
        self.root = require_dir(image_root, "LVIS image folder", "<lvis_root>/train2017/<COCO image>.jpg")
        self.lvis = lvis
        self.ann_list = list(lvis.get_ann_ids(area_rng=[LVIS_MIN_AREA, float("inf")]))
        if verbose:
            print(f"{len(self.ann_list)} annotations out of {len(lvis.anns)} used in LVIS.", flush=True)
        if not self.ann_list:
            raise DatasetLayoutError(f"{self.root}: no LVIS annotation larger than 50×50 pixels")

    def __len__(self) -> int:
        return len(self.ann_list)

    def __getitem__(self, idx: int) -> dict:
        ann_id = self.ann_list[idx]
        name, gt_mask = self.lvis.load_img_ann(ann_id)
        im = open_image(Path(self.root) / name, "RGB")
        gt = Image.fromarray(gt_mask * 255)

        from_zero = np.random.rand() < FROM_ZERO_PROBABILITY
        # sometimes involve another instance of the same image
        other = None
        if not from_zero and np.random.rand() < 0.75:
            image_id = self.lvis.anns[ann_id]["image_id"]
            candidates = self.lvis.get_ann_ids(img_ids=[image_id], area_rng=[LVIS_OTHER_MIN_AREA, float("inf")])
            other_id = np.random.choice(candidates) if candidates else ann_id
            if other_id != ann_id:
                other = Image.fromarray(self.lvis.load_img_ann(other_id)[1] * 255)

        seed = np.random.randint(2147483647)
        reseed(seed)
        im = self.im_lone_transform(self.im_dual_transform(im))
        reseed(seed)
        gt = self.gt_dual_transform(gt)
        if other is not None:
            reseed(seed)
            other = self.gt_dual_transform(other)

        gt_np = np.array(gt)
        seg = self.previous_mask(gt_np, from_zero)
        extra_negative = None
        if other is not None:
            other_np = np.array(other)
            if np.random.rand() < 0.5:
                # the other instance's positive scribbles become negatives here
                extra_negative, _ = get_scribble(np.zeros_like(seg), other_np, True)
            else:
                # the previous mask also (wrongly) covers a perturbed copy of the other instance
                seg = np.clip(seg.astype(np.float32) + perturb_mask(other_np).astype(np.float32), 0, 255).astype(np.uint8)
        pos, neg = get_scribble(seg, gt_np, from_zero=from_zero)
        if extra_negative is not None:
            neg = np.clip(neg + extra_negative, 0, 1).astype(np.uint8)
        return self.pack(im, gt, seg, pos, neg, name)
