"""Resize scraped texture/skybox images for rendering, as the original BL30K pipeline does: for every class sub-folder of
``input`` (one process per folder), scale so the shorter side is 512 (``INTER_AREA``) and keep the
top-left 512×512 crop. Unreadable files are skipped.

    python generation/blender/resize_texture.py raw_textures/texture textures/texture
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

MIN_SIZE = 512


def resize_and_crop(img: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """H×W(×C) → shorter side ``min_size`` (area interpolation), then the top-left ``min_size`` square."""
    h, w = img.shape[:2]
    scale = min(h, w) / min_size
    # round (not truncate) so the shorter side is exactly min_size despite float error
    size = (round(w / scale), round(h / scale))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img[:min_size, :min_size]


def resize_folder(in_dir: str, out_dir: str, min_size: int = MIN_SIZE) -> int:
    """Resize every image of one class folder; returns how many were written."""
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    for name in sorted(os.listdir(in_dir)):
        img = cv2.imread(os.path.join(in_dir, name), cv2.IMREAD_UNCHANGED)
        if img is None:
            continue
        cv2.imwrite(os.path.join(out_dir, name), resize_and_crop(img, min_size))
        n += 1
    return n


def _job(args: tuple[str, str, int]) -> int:
    return resize_folder(*args)


def resize_all(input_dir: str | os.PathLike, output_dir: str | os.PathLike, processes: int | None = None,
               min_size: int = MIN_SIZE) -> int:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder (expected <class>/<image> sub-folders)")
    jobs = [(str(d), str(output_dir / d.name), min_size) for d in sorted(input_dir.iterdir()) if d.is_dir()]
    output_dir.mkdir(parents=True, exist_ok=True)
    if processes == 1 or len(jobs) <= 1:
        return sum(_job(j) for j in jobs)
    with Pool(processes) as pool:
        return sum(pool.map(_job, jobs, chunksize=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Resize texture images: shorter side 512 (INTER_AREA), top-left "
                                "512x512 crop, for every class sub-folder.")
    p.add_argument("input", help="folder of class sub-folders with images")
    p.add_argument("output", help="output folder (same sub-folders)")
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: all cores)")
    args = p.parse_args(argv)
    try:
        n = resize_all(args.input, args.output, args.processes)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"All done ({n} images).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
