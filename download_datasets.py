"""Download the training/evaluation datasets (static image sets, DAVIS 2016/2017, YouTube-VOS) into
the folder layout the trainers and evaluators expect, by default next to the repo:

    ../static/{fss,DUTS-TR,DUTS-TE,ecssd,BIG_small,HRSOD_small}
    ../DAVIS/2016, ../DAVIS/2017/{trainval,test-dev}
    ../YouTube/{train,valid,train_480p,all_frames/valid_all_frames}

    python download_datasets.py --yes                       # everything
    python download_datasets.py --only davis2017_trainval davis2017_scribbles
    python download_datasets.py --root /data --mirror http://host/files

Downloads resume, archives are extracted into a staging folder and merged, finished parts leave a
``.<part>.done`` marker and are skipped on re-runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from util.download import (RESUME_HINT, MIRRORS_DATASETS, ArchivePart, DownloadError, Source, confirm_licence,
                           check_folder, install_part, select_parts, with_mirror)

LICENCE = """\
The datasets below are NOT ours; they are redistributed under their own licences. By continuing you
agree to use them according to those licences (most are for non-commercial research only):
  DUTS        http://saliencydetection.net/duts
  HRSOD       https://github.com/yi94code/HRSOD
  FSS-1000    https://github.com/HKUSTCV/FSS-1000
  ECSSD       https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html
  BIG         https://github.com/hkchengrex/CascadePSP
  YouTube-VOS https://youtube-vos.org
  DAVIS       https://davischallenge.org/
  BL30K       https://github.com/hkchengrex/MiVOS
"""

# The original's download links (verbatim).
SOURCES: dict[str, Source] = {
    "static": Source("https://drive.google.com/uc?id=1wUJq3HcLdN-z1t4CsUhjeZ9BVDb9YKLd", "static_data.zip"),
    "davis2016": Source("https://drive.google.com/uc?id=198aRlh5CpAoFz0hfRgYbiNenn_K8DxWD", "DAVIS-data.zip"),
    "davis2017_trainval": Source("https://drive.google.com/uc?id=1kiaxrX_4GuW6NmiVuKGSGVoKGWjOdp6d",
                                 "DAVIS-2017-trainval-480p.zip"),
    "davis2017_scribbles": Source("https://drive.google.com/uc?id=1JzIQSu36h7dVM8q0VoE4oZJwBXvrZlkl",
                                  "DAVIS-2017-scribbles-trainval.zip"),
    "davis2017_testdev": Source("https://drive.google.com/uc?id=1fmkxU2v9cQwyb62Tj1xFDdh2p4kDsUzD",
                                "DAVIS-2017-test-dev-480p.zip"),
    "youtube_train": Source("https://drive.google.com/uc?id=13Eqw0gVK-AO5B-cqvJ203mZ2vzWck9s4", "train.zip"),
    "youtube_valid": Source("https://drive.google.com/uc?id=1o586Wjya-f2ohxYf9C1RlRH-gkrzGS8t", "valid.zip"),
    "youtube_valid_all_frames": Source("https://drive.google.com/uc?id=1rWQzZcMskgpEQOZdJPJ7eTmLCBEIIpEN",
                                       "valid_all_frames.zip"),
}

RESIZE_PART = "youtube_480p"


def build_parts(sources: dict[str, Source]) -> list[ArchivePart]:
    """The archives and where each one goes (the DAVIS zips hold a ``DAVIS`` folder that is
    renamed to ``2016`` / ``trainval`` (trainval + scribbles merged) / ``test-dev``)."""
    s = sources
    return [
        ArchivePart("static", s["static"], "static/static_data.zip", "static"),
        ArchivePart("davis2016", s["davis2016"], "DAVIS/DAVIS-data.zip", "DAVIS/2016", inner="DAVIS"),
        ArchivePart("davis2017_trainval", s["davis2017_trainval"], "DAVIS/2017/DAVIS-2017-trainval-480p.zip",
                    "DAVIS/2017/trainval", inner="DAVIS"),
        ArchivePart("davis2017_scribbles", s["davis2017_scribbles"], "DAVIS/2017/DAVIS-2017-scribbles-trainval.zip",
                    "DAVIS/2017/trainval", inner="DAVIS"),
        ArchivePart("davis2017_testdev", s["davis2017_testdev"], "DAVIS/2017/DAVIS-2017-test-dev-480p.zip",
                    "DAVIS/2017/test-dev", inner="DAVIS"),
        ArchivePart("youtube_train", s["youtube_train"], "YouTube/train.zip", "YouTube"),
        ArchivePart("youtube_valid", s["youtube_valid"], "YouTube/valid.zip", "YouTube"),
        ArchivePart("youtube_valid_all_frames", s["youtube_valid_all_frames"], "YouTube/all_frames/valid.zip",
                    "YouTube/all_frames"),
    ]


def resize_youtube(root: Path, processes: int = 8) -> str:
    """``YouTube/train`` → ``YouTube/train_480p`` (shorter side 480); skipped when already done."""
    from scripts.resize_youtube import resize_all
    out = root / "YouTube" / "train_480p"
    marker = out / f".{RESIZE_PART}.done"
    if marker.is_file():
        return "skipped"
    src = root / "YouTube" / "train"
    if not (src / "JPEGImages").is_dir():
        raise DownloadError(f"{src}: YouTube-VOS train set not found; download it first (--only youtube_train)")
    n = resize_all(src, out, processes=processes)
    marker.write_text(f"{n} videos\n")
    return "installed"


def run(root: Path, parts: list[str], sources: dict[str, Source], *, keep_archives: bool = False,
        quiet: bool = False, processes: int = 8) -> dict[str, str]:
    """Install the named parts (and the YouTube resize when named); returns {part: status}."""
    status = {}
    for part in build_parts(sources):
        if part.name in parts:
            status[part.name] = install_part(part, root, mirrors=MIRRORS_DATASETS, keep_archive=keep_archives,
                                             quiet=quiet)
            print(f"{part.name}: {status[part.name]}")
    if RESIZE_PART in parts:
        status[RESIZE_PART] = resize_youtube(root, processes)
        print(f"{RESIZE_PART}: {status[RESIZE_PART]}")
    return status


def build_parser() -> argparse.ArgumentParser:
    names = list(SOURCES) + [RESIZE_PART]
    p = argparse.ArgumentParser(description="Download and lay out the static image sets, DAVIS 2016/2017 and "
                                "YouTube-VOS (resized to 480p) for training and evaluation.")
    p.add_argument("--root", default="..", help="folder that receives static/, DAVIS/, YouTube/ (default: ..)")
    p.add_argument("--only", nargs="+", metavar="PART", help=f"install only these parts: {', '.join(names)}")
    p.add_argument("--yes", action="store_true", help="accept the dataset licences without asking")
    p.add_argument("--mirror", default=None, help="base URL to fetch <mirror>/<archive name> from instead of "
                   "Google Drive")
    p.add_argument("--keep_archives", action="store_true", help="keep the zip files after extraction")
    p.add_argument("--processes", type=int, default=8, help="processes for the YouTube resize (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from util.cli import run_cli
    plan: dict = {}

    def check(args) -> None:
        """Bad options are refused (exit 2) before the licence question and any download."""
        plan["sources"] = with_mirror(SOURCES, args.mirror)
        plan["parts"] = select_parts(list(SOURCES) + [RESIZE_PART], args.only)
        if args.processes < 1:
            raise DownloadError(f"--processes {args.processes}: must be at least 1; give e.g. --processes 8")
        check_folder(args.root, "--root")

    def fetch(args) -> None:
        confirm_licence(LICENCE, args.yes)
        run(Path(args.root), plan["parts"], plan["sources"], keep_archives=args.keep_archives, quiet=args.quiet,
            processes=args.processes)

    return (run_cli(check, args, (DownloadError,), code=2)
            or run_cli(fetch, args, (DownloadError, FileNotFoundError), code=1, interrupted=RESUME_HINT))


if __name__ == "__main__":
    sys.exit(main())
