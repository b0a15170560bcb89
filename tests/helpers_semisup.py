"""Generated data for the semi-supervised evaluation / propagate.py tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.synthetic import make_clip, write_image_folder
from util.palette import save_mask_png


def write_youtube_layout(root: Path, video: str = "vid0", num_frames: int = 7, size: tuple[int, int] = (128, 112),
                         ids: tuple[int, int, int] = (2, 5, 9), late_frame: int = 3, seed: int = 3) -> dict:
    """A YouTube-VOS valid layout with one video: objects ``ids[0]``, ``ids[1]`` annotated at frame 0,
    ``ids[2]`` first annotated at ``late_frame``. Frame files are named ``00000.jpg``, ``00005.jpg``, ...
    (every 5th number, as YouTube's). Returns {frames, labels (T×H×W with the ids), names}."""
    clip = make_clip(num_frames=num_frames, width=size[0], height=size[1], num_objects=3, seed=seed)
    lut = np.array([0, *ids] + [0] * (255 - len(ids)), np.uint8)
    labels = lut[clip.labels]
    names = [f"{5 * t:05d}" for t in range(num_frames)]
    img_dir = root / "all_frames" / "valid_all_frames" / "JPEGImages" / video
    for t, name in enumerate(names):
        write_image_folder(img_dir, clip.frames[t:t + 1], pattern=name + ".jpg")
    ann = root / "valid" / "Annotations" / video
    first = labels[0].copy()
    first[first == ids[2]] = 0
    save_mask_png(ann / f"{names[0]}.png", first)
    late = np.where(labels[late_frame] == ids[2], ids[2], 0).astype(np.uint8)
    save_mask_png(ann / f"{names[late_frame]}.png", late)
    return {"frames": clip.frames, "labels": labels, "names": names}
