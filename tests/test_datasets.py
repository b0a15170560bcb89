"""Whole-video test datasets (DAVIS, BL30K layouts), one-hot conversion and shared re-seeded transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dataset.bl_test_dataset import BLTestDataset
from dataset.davis_test_dataset import DAVISTestDataset
from dataset.layout import DatasetLayoutError
from dataset.onehot_util import all_to_onehot
from dataset.reseed import reseed
from util.image_util import normalize_frames
from util.palette import save_mask_png


def write_bl_video(root, name: str, labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    for f in range(labels.shape[0]):
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[f]).save(root / "JPEGImages" / name / f"{f:05d}.jpg", quality=95)
        save_mask_png(root / "Annotations" / name / f"{f:05d}.png", labels[f])
    return frames


def test_bl_test_dataset_slice_and_labels_from_all_frames(tmp_path):
    labels = np.zeros((3, 16, 24), np.uint8)
    labels[0, :4, :4] = 1
    labels[2, 8:, 8:] = 3  # appears only later: BL30K takes labels from every frame
    for i, name in enumerate(["vid_c", "vid_a", "vid_b"]):
        write_bl_video(tmp_path, name, labels, seed=i)
    ds = BLTestDataset(tmp_path, start=1, end=2)
    assert ds.videos == ["vid_b", "vid_c"]
    item = ds[0]
    assert item["info"]["name"] == "vid_b" and item["info"]["labels"].tolist() == [1, 3]
    assert item["rgb"].shape == (3, 3, 16, 24) and item["gt"].shape == (2, 3, 1, 16, 24)
    assert torch.equal(item["gt"][1, :, 0], torch.from_numpy(labels == 3).float())
    frames = np.stack([np.asarray(Image.open(tmp_path / "JPEGImages" / "vid_b" / f"{f:05d}.jpg")) for f in range(3)])
    assert torch.equal(item["rgb"], normalize_frames(frames))


def test_davis_test_dataset_labels_from_first_frame(tmp_path):
    root = tmp_path / "trainval"
    labels = np.zeros((2, 16, 24), np.uint8)
    labels[:, :4, :4] = 2
    labels[1, 8:, 8:] = 5  # not in frame 0: ignored, as the original
    frames = np.zeros((2, 16, 24, 3), np.uint8)
    for f in range(2):
        (root / "JPEGImages" / "480p" / "v").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[f]).save(root / "JPEGImages" / "480p" / "v" / f"{f:05d}.jpg")
    save_mask_png(root / "Annotations" / "480p" / "v" / "00000.png", labels[0])  # frame 1 unannotated
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("v\n")
    item = DAVISTestDataset(root, imset="2017/train.txt")[0]
    assert item["info"]["labels"].tolist() == [2] and item["info"]["size_480p"] == (16, 24)
    assert item["gt"].shape == (1, 2, 1, 16, 24) and item["gt"][0, 1].sum() == 0
    with pytest.raises(DatasetLayoutError, match="ImageSets"):
        DAVISTestDataset(root, imset="2017/val.txt")


def test_all_to_onehot():
    masks = np.array([[0, 1], [4, 1]], np.uint8)
    assert all_to_onehot(masks, [1, 4]).tolist() == [[[0, 1], [0, 1]], [[0, 0], [1, 0]]]


def test_reseed_gives_image_and_mask_the_same_flip_and_crop():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8))
    t = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomCrop(20)])
    outs = []
    for _ in range(2):
        reseed(1234)
        outs.append(np.asarray(t(image)))
    assert np.array_equal(outs[0], outs[1])
    reseed(99)
    assert not np.array_equal(outs[0], np.asarray(t(image)))
