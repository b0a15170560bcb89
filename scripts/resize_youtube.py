"""Resize YouTube-VOS training videos so the shorter side is 480 px, as the original's script does (images bicubic,
annotations nearest, 8 processes) — ``YouTube/train`` → ``YouTube/train_480p``.

    python scripts/resize_youtube.py ../YouTube/train ../YouTube/train_480p
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: the project's util/

NEW_MIN_SIZE = 480


def resized_size(width: int, height: int, min_size: int = NEW_MIN_SIZE) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``min_size`` (rounded, so it is exact)."""
    ratio = min_size / min(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def resize_video(video_dir: Path, out_dir: Path, resample: int, min_size: int = NEW_MIN_SIZE) -> int:
    """Resize every image of one video folder into ``out_dir`` (same names); returns the frame count.
    Frames already in ``out_dir`` are kept (re-runs continue where they stopped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for frame in sorted(video_dir.iterdir()):
        if not frame.is_file():
            continue
        target = out_dir / frame.name
        n += 1
        if target.is_file():
            continue
        with Image.open(frame) as im:
            small = im.resize(resized_size(*im.size, min_size), resample)  # a palette image keeps its palette
            tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
            small.save(tmp)
            os.replace(tmp, target)
    return n


def _job(args: tuple[str, str, str, int, int]) -> int:
    video, src, dst, resample, min_size = args
    return resize_video(Path(src) / video, Path(dst) / video, resample, min_size)


def resize_all(in_path: str | os.PathLike, out_path: str | os.PathLike, processes: int = 8,
               min_size: int = NEW_MIN_SIZE) -> int:
    """Resize ``in_path/{JPEGImages,Annotations}/<video>/*`` into ``out_path`` (same layout).

    Images: bicubic; annotations: nearest (labels stay labels). Returns the number of videos."""
    in_path, out_path = Path(in_path), Path(out_path)
    if not (in_path / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{in_path}: no JPEGImages folder; is this the extracted YouTube-VOS train set?")
    jobs = []
    for sub, resample in (("JPEGImages", Image.BICUBIC), ("Annotations", Image.NEAREST)):
        src = in_path / sub
        if not src.is_dir():
            continue
        for video in sorted(p.name for p in src.iterdir() if p.is_dir()):
            jobs.append((video, str(src), str(out_path / sub), int(resample), min_size))
    if processes > 1 and len(jobs) > 1:
        with Pool(processes) as pool:
            for _ in pool.imap_unordered(_job, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _job(job)
    return len({j[0] for j in jobs})


def main(argv: list[str] | None = None) -> int:
    from util import cli
    p = cli.CliParser(description="Resize YouTube-VOS so the shorter side is 480 px (images bicubic, "
                      "annotations nearest).")
    p.add_argument("input", help="e.g. ../YouTube/train")
    p.add_argument("output", help="e.g. ../YouTube/train_480p (not the input: the originals are kept)")
    p.add_argument("--processes", type=int, default=8)
    args = p.parse_args(argv)

    def run(args: argparse.Namespace) -> int:
        cli.positive_int("--processes", args.processes)
        cli.input_dir("input", args.input, "YouTube-VOS train folder", "pass the extracted train folder")
        cli.output_dir("output", args.output, {"input": args.input})
        n = resize_all(args.input, args.output, args.processes)
        print(f"Resized {n} videos into {args.output}")
        return 0

    return cli.run_cli(run, args, (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
