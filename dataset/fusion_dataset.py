"""Training samples for the difference-aware fusion module (the original's fusion training data).

Data:

- ``im_root/<video>/%05d.jpg`` frames and ``gt_root/<video>/%05d.png`` palette label maps;
- ``fd_root/<run>/<video>/<ref %05d>/<obj %05d>/<frame %05d>.png`` fusion data written by
  ``generate_fusion.py``: for every reference (interacted) frame ``ref`` and object ``obj`` (the label
  value), the propagated probability of that object at every frame reached from ``ref`` (uint8,
  prob·255). ``<run>`` separates generation runs (e.g. different ``--separation``/``--mem_freq``).

A sample simulates a second interaction: reference 1 (``r1``, the earlier round) and reference 2
(``r2``, the new interaction) both propagated the target object to a target frame ``t``; the fusion
network must combine ``seg1`` (from r1) and ``seg2`` (from r2) into the ground truth at ``t``, helped by
the difference between r1's propagation at r2 and the ground truth at r2 (what the user corrected).

Sampling (up to 20 trials): the first 5 trials use video ``idx % #videos``, later ones a random video;
a random run of it, random ``r1`` folder, random object folder in it, random target frame PNG in it;
``r2`` is a random other reference whose frame r1 reached and that reached ``t`` for the object; a second
object present at ``t`` under both references is picked when available. ``seg1`` and ``seg2`` must
differ (|Δ| > 25.5) on at least 100 pixels after the shared transform (for the first 15 trials).
All images and maps of a sample share one random horizontal flip and ``crop_size`` crop (no resize);
images also get ``ColorJitter(0.1, 0.03, 0.03, 0.01)`` with the same parameters.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from dataset.layout import DatasetError, DatasetLayoutError, open_image, read_label_png, require_dir, sorted_listdir
from dataset.reseed import reseed
from util.image_util import normalize_frames

FUSION_LAYOUT = "<fusion root>/<run>/<video>/<ref %05d>/<obj %05d>/<frame %05d>.png (written by generate_fusion.py)"
FRAMES_LAYOUT = "<video>/%05d.jpg frame folders"
MASKS_LAYOUT = "<video>/%05d.png palette label maps"

MAX_TRIALS = 20
SAME_VIDEO_TRIALS = 5
MIN_DIFF_PIXELS = 100
DIFF_THRESHOLD = 255 * 0.1


class FusionDataset(Dataset):
    """``len = 100 × #videos``; each item is a dict (shapes for ``crop_size`` S):

    ``rgb`` 3×S×S normalised target image; ``cls_gt`` S×S int64 (0 bg, 1 object 1, 2 object 2);
    ``gt``, ``seg1``, ``seg2``, ``src2_ref``, ``src2_ref_gt`` (object 1) and ``gt2``, ``seg12``,
    ``seg22``, ``src2_ref2``, ``src2_ref_gt2`` (object 2, zeros if absent) 1×S×S float; ``src2_ref_im``
    3×S×S normalised image at reference 2; ``dist`` (2,) = [|r1−t|, |r2−t|] / |r1−r2|;
    ``selector`` (2,) = [1, 1] or [1, 0]; ``info`` (name, refs, target frame, objects).
    """

    def __init__(self, im_root: str | os.PathLike, gt_root: str | os.PathLike, fd_root: str | os.PathLike,
                 crop_size: int = 384, verbose: bool = True):
        self.im_root = require_dir(im_root, "frame folder", FRAMES_LAYOUT)
        self.gt_root = require_dir(gt_root, "annotation folder", MASKS_LAYOUT)
        self.fd_root = require_dir(fd_root, "fusion data folder", FUSION_LAYOUT)
        self.crop_size = crop_size

        all_videos = [v for v in sorted_listdir(self.im_root) if (self.im_root / v).is_dir()]
        self.vid_to_instance: dict[str, list[Path]] = defaultdict(list)
        total_fusion_videos = 0
        for run in sorted_listdir(self.fd_root):
            run_path = self.fd_root / run
            if not run_path.is_dir():
                continue
            for video in sorted_listdir(run_path):
                if (run_path / video).is_dir():
                    self.vid_to_instance[video].append(run_path / video)
                    total_fusion_videos += 1
        self.videos = [v for v in all_videos if v in self.vid_to_instance]
        if verbose:
            print(f"{len(self.videos)} out of {len(all_videos)} videos accepted.")
            print(f"{total_fusion_videos} fusion videos accepted")
        if not self.videos:
            raise DatasetLayoutError(f"{self.fd_root}: no fusion data for any video of {self.im_root}; "
                                     f"expected {FUSION_LAYOUT}")
        first = self.im_root / self.videos[0]
        frame = next(iter(sorted(first.glob("*.jpg"))), None)
        if frame is not None:
            w, h = Image.open(frame).size
            if min(h, w) < crop_size:
                raise DatasetError(f"{frame}: frames of {w}×{h} are smaller than the {crop_size}×{crop_size} crop; "
                                 "use larger frames or a smaller crop size")

        self.im_dual_transform = transforms.Compose([
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(crop_size),
            transforms.ColorJitter(0.1, 0.03, 0.03, 0.01),
        ])
        # masks (label maps) and propagated probability maps: the same flip and crop, nothing else
        self.map_dual_transform = transforms.Compose([
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(crop_size),
        ])

    def __len__(self) -> int:
        return len(self.videos) * 100

    # -- helpers -------------------------------------------------------------------------------
    def _map(self, image: Image.Image, seed: int) -> np.ndarray:
        reseed(seed)
        return np.asarray(self.map_dual_transform(image))

    def _image(self, path: Path, seed: int) -> torch.Tensor:
        reseed(seed)
        u8 = np.array(self.im_dual_transform(open_image(path, "RGB")))  # a writable copy for torch
        return normalize_frames(u8)[0]

    @staticmethod
    def _gray(path: Path) -> Image.Image:
        return open_image(path, "L")

    @staticmethod
    def _labels(path: Path) -> Image.Image:
        return Image.fromarray(read_label_png(path))

    @staticmethod
    def _prob(u8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(u8.astype(np.float32) / 255)[None]

    @staticmethod
    def _binary(labels: np.ndarray, obj: int) -> torch.Tensor:
        return torch.from_numpy((labels == obj).astype(np.float32))[None]

    def __getitem__(self, idx: int) -> dict:
        sample = None
        for trial in range(MAX_TRIALS):
            video = self.videos[idx % len(self.videos)] if trial < SAME_VIDEO_TRIALS else np.random.choice(self.videos)
            sample = self._try_sample(video, trial)
            if sample is not None:
                return sample
        raise RuntimeError(f"{self.fd_root}: no usable reference pair found in {MAX_TRIALS} trials (video "
                           f"{self.videos[idx % len(self.videos)]}); each video needs ≥ 2 reference folders whose "
                           "propagations reach each other's frames (generate_fusion.py with a smaller --separation)")

    def _try_sample(self, video: str, trial: int) -> dict | None:
        sequence_seed = np.random.randint(2147483647)
        instances = self.vid_to_instance[video]
        video_path = instances[np.random.choice(len(instances))]

        # reference 1, target object and target frame
        all_refs = sorted_listdir(video_path)
        if not all_refs:
            return None
        first_ref = np.random.choice(all_refs)
        objects = sorted_listdir(video_path / first_ref)
        if not objects:
            return None
        tar_obj = np.random.choice(objects)
        frames = sorted_listdir(video_path / first_ref / tar_obj)
        if not frames:
            return None
        tar_frame = np.random.choice(frames)
        tar_obj_int = int(tar_obj)
        tar_frame_int = int(Path(tar_frame).stem)

        # reference 2: reached by reference 1's propagation, and itself reaching the target frame
        options = [r for r in all_refs if r != first_ref
                   and (video_path / first_ref / tar_obj / f"{r}.png").exists()
                   and (video_path / r / tar_obj / tar_frame).exists()]
        if not options:
            return None
        second_ref = np.random.choice(options)

        # another object present at the target frame under both references
        sec_options = [o for o in objects if o != tar_obj
                       and (video_path / first_ref / o / tar_frame).exists()
                       and (video_path / second_ref / o / tar_frame).exists()]
        sec_obj = np.random.choice(sec_options) if sec_options else None

        r1, r2 = int(first_ref), int(second_ref)
        dist = [abs(r1 - tar_frame_int) / abs(r1 - r2), abs(r2 - tar_frame_int) / abs(r1 - r2)]

        png_name = f"{tar_frame_int:05d}.png"
        jpg_name = f"{tar_frame_int:05d}.jpg"
        ref2_png = f"{r2:05d}.png"
        ref2_jpg = f"{r2:05d}.jpg"

        seg1 = self._map(self._gray(video_path / first_ref / tar_obj / png_name), sequence_seed)
        seg2 = self._map(self._gray(video_path / second_ref / tar_obj / png_name), sequence_seed)
        diff = np.abs(seg1.astype(np.float32) - seg2.astype(np.float32)) > DIFF_THRESHOLD
        if trial < MAX_TRIALS * 0.75 and np.count_nonzero(diff) < MIN_DIFF_PIXELS:
            return None

        vid_im = self.im_root / video
        vid_gt = self.gt_root / video
        gt_labels_img = self._labels(vid_gt / png_name)
        ref2_labels_img = self._labels(vid_gt / ref2_png)
        src2_ref = self._map(self._gray(video_path / first_ref / tar_obj / ref2_png), sequence_seed)
        gt_labels = self._map(gt_labels_img, sequence_seed)
        ref2_labels = self._map(ref2_labels_img, sequence_seed)
        rgb = self._image(vid_im / jpg_name, sequence_seed)
        src2_ref_im = self._image(vid_im / ref2_jpg, sequence_seed)

        data = {
            "rgb": rgb,                                       # target frame image
            "gt": self._binary(gt_labels, tar_obj_int),       # object 1 GT at the target frame
            "seg1": self._prob(seg1),                         # object 1 propagated from r1, at t
            "seg2": self._prob(seg2),                         # object 1 propagated from r2, at t
            "src2_ref": self._prob(src2_ref),                 # object 1 propagated from r1, at r2
            "src2_ref_gt": self._binary(ref2_labels, tar_obj_int),  # object 1 GT at r2
            "src2_ref_im": src2_ref_im,                       # image at r2
        }
        if sec_obj is not None:
            sec_obj_int = int(sec_obj)
            data["gt2"] = self._binary(gt_labels, sec_obj_int)
            data["seg12"] = self._prob(self._map(self._gray(video_path / first_ref / sec_obj / tar_frame), sequence_seed))
            data["seg22"] = self._prob(self._map(self._gray(video_path / second_ref / sec_obj / tar_frame), sequence_seed))
            data["src2_ref2"] = self._prob(self._map(self._gray(video_path / first_ref / sec_obj / ref2_png),
                                                     sequence_seed))
            data["src2_ref_gt2"] = self._binary(ref2_labels, sec_obj_int)
            selector = [1.0, 1.0]
        else:
            sec_obj_int = -1
            zeros = torch.zeros_like(data["gt"])
            for key in ("gt2", "seg12", "seg22", "src2_ref2", "src2_ref_gt2"):
                data[key] = zeros.clone()
            selector = [1.0, 0.0]

        cls_gt = torch.zeros(data["gt"].shape[-2:], dtype=torch.int64)
        cls_gt[data["gt"][0] > 0.5] = 1
        cls_gt[data["gt2"][0] > 0.5] = 2
        data["cls_gt"] = cls_gt
        data["dist"] = torch.tensor(dist, dtype=torch.float32)
        data["selector"] = torch.tensor(selector, dtype=torch.float32)
        data["info"] = {"name": video, "refs": [r1, r2], "frame": tar_frame_int, "objects": [tar_obj_int, sec_obj_int]}
        return data
