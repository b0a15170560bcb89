"""Download the four pretrained weights into saves/ (and the GUI's example clip).

    python download_model.py                      # everything missing or broken
    python download_model.py --only s2m fbrs      # pick files
    python download_model.py --pretrained --no_example   # also the ImageNet ResNet-50 training starts from
    python download_model.py --mirror http://host/path   # fetch <path>/<file name> instead

A file already present and loadable is skipped; a partial download resumes; a finished download is
checked to load as a checkpoint (and, when the network code is available, to fit its network) before
it is kept, the example clip to decode with OpenCV. A present file that fails its check is moved aside
to ``<name>.invalid`` and downloaded again. Offline or on a dead link the script prints one line naming
the manual mirrors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from util.download import (RESUME_HINT, MIRRORS_MODELS, DownloadError, Source, download, check_folder, select_parts,
                           with_mirror)

ROOT = Path(__file__).resolve().parent

# The original's download links (verbatim); short name -> source (filename = the name in saves/).
MODELS: dict[str, Source] = {
    "propagation": Source("https://drive.google.com/uc?id=19dfbVDndFkboGLHESi8DGtuxF1B21Nm8", "propagation_model.pth"),
    "fusion": Source("https://drive.google.com/uc?id=1Lc1lI5-ix4WsCRdipACXgvS3G-o0lMoz", "fusion.pth"),
    "s2m": Source("https://drive.google.com/uc?id=1HKwklVey3P2jmmdmrACFlkXtcvNxbKMM", "s2m.pth"),
    "fbrs": Source("https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/"
                   "resnet50_dh128_lvis.pth", "fbrs.pth"),
}
# Only the trainers read these: the ImageNet ResNet-50 (torchvision's v1 weights) the original's propagation
# encoders start from (train_propagation.py --imagenet).
PRETRAINED: dict[str, Source] = {
    "resnet50": Source("https://download.pytorch.org/models/resnet50-19c8e357.pth", "resnet50-19c8e357.pth"),
}
ALL = {**MODELS, **PRETRAINED}
EXAMPLE = Source("https://github.com/hkchengrex/MiVOS/raw/main/example/example.mp4", "example.mp4")

# short name -> model.factory loader name (built lazily: the network code may be absent)
_FACTORY_LOADERS = {"propagation": "load_propagation", "fusion": "load_fusion", "s2m": "load_s2m", "fbrs": "load_fbrs",
                    "resnet50": "load_imagenet_resnet50"}


def check_checkpoint(name: str, path: Path, full: bool = True) -> str:
    """Raise :class:`CheckpointError` unless ``path`` loads as the ``name`` checkpoint.

    ``full``: also build the network and load it strictly (``model.factory``) when that code exists;
    otherwise only the state dict is read. Returns how it was checked."""
    from util.checkpoint import read_state_dict  # torch is imported only when needed (fast --help)
    read_state_dict(path)
    if not full:
        return "state dict readable"
    try:
        import model.factory as factory
        loader = getattr(factory, _FACTORY_LOADERS[name])
        loader(path)
    except ImportError as e:
        # the network code is not in this checkout (or cannot be imported): the state-dict check is all we can do
        if (e.name or "").startswith("model"):
            return "state dict readable (network code not available)"
        return f"state dict readable (network code not importable: {e.name or e})"
    return "loads into its network"


def check_video(path: Path) -> None:
    """Raise ``ValueError`` ("is not …") unless OpenCV decodes at least one frame of ``path``."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
    finally:
        cap.release()
    if not ok or frame is None:
        raise ValueError("is not a video OpenCV can decode (no frame could be read)")


def _resolve_only(only: list[str] | None) -> list[str] | None:
    """Accept short names (``s2m``) and file names (``s2m.pth``) in ``--only``."""
    if not only:
        return None
    by_file = {s.filename: k for k, s in ALL.items()}
    by_file.update({Path(s.filename).stem: k for k, s in ALL.items()})
    return [by_file.get(o, o) for o in only]


def download_models(output: Path, names: list[str], sources: dict[str, Source], *, full_check: bool = True,
                    quiet: bool = False) -> dict[str, str]:
    """Fetch ``names`` into ``output``; returns ``{name: 'skipped' | 'downloaded'}``.

    Raises :class:`DownloadError` / :class:`CheckpointError` (one line) on the first failure."""
    from util.checkpoint import CheckpointError
    output.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for name in names:
        src = sources[name]
        dest = output / src.filename
        if dest.exists() and not dest.is_file():
            raise DownloadError(f"{dest}: is a folder, not a checkpoint file; move it away and run again")
        if dest.is_file():
            try:
                how = check_checkpoint(name, dest, full_check)
                print(f"{dest}: present, {how}; skipped")
                status[name] = "skipped"
                continue
            except CheckpointError as e:
                # keep the user's file aside (it may be their own training result) instead of deleting it
                aside = dest.with_name(dest.name + ".invalid")
                dest.replace(aside)
                print(f"{dest}: present but not usable ({e}); moved to {aside.name}, downloading it again",
                      file=sys.stderr)
        # download to a side name first so a file that does not load never takes the final name
        staged = dest.with_name(dest.name + ".new")
        # messages name the staged .part as it is, and the final name for a copy fetched by hand
        download(src.url, staged, md5=src.md5, quiet=quiet, mirrors=MIRRORS_MODELS, label=src.filename, final=dest,
                 mirror=src.mirror)
        try:
            how = check_checkpoint(name, staged, full_check)
        except CheckpointError as e:
            staged.unlink(missing_ok=True)
            if src.mirror:
                raise CheckpointError(f"--mirror {src.mirror}: {src.url} is not a usable {src.filename} ({e}); check "
                                      f"what the mirror serves, or leave out --mirror to use the official links") from None
            raise CheckpointError(f"{src.url} downloaded but is not a usable {src.filename} ({e}); "
                                  f"the link may serve an error page — fetch it by hand: {MIRRORS_MODELS}") from None
        staged.replace(dest)
        print(f"{dest}: downloaded, {how}")
        status[name] = "downloaded"
    return status


def download_example(dest: Path, source: Source, quiet: bool = False) -> str:
    """Fetch the example clip unless a decodable one is present (an undecodable one is moved aside)."""
    if dest.is_file():
        try:
            check_video(dest)
            print(f"{dest}: present, decodes; skipped")
            return "skipped"
        except ValueError as e:
            aside = dest.with_name(dest.name + ".invalid")
            dest.replace(aside)
            print(f"{dest}: present but {e}; moved to {aside.name}, downloading it again", file=sys.stderr)
    download(source.url, dest, md5=source.md5, quiet=quiet, validate=check_video, mirror=source.mirror,
             mirrors="https://github.com/hkchengrex/MiVOS/tree/main/example")
    print(f"{dest}: downloaded, decodes")
    return "downloaded"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download the MiVOS weights (propagation_model.pth, fusion.pth, s2m.pth, "
                                "fbrs.pth) into saves/ and the example clip for the GUI.")
    p.add_argument("--output", default=str(ROOT / "saves"), help="folder for the weights (default: saves/)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help=f"download only these: {', '.join(ALL)} (or their file names)")
    p.add_argument("--pretrained", action="store_true",
                   help="also fetch the ImageNet ResNet-50 that train_propagation.py starts from (training only)")
    p.add_argument("--no_example", action="store_true", help="do not fetch example/example.mp4")
    p.add_argument("--example_output", default=str(ROOT / "example" / "example.mp4"),
                   help="where the example clip goes (default: example/example.mp4)")
    p.add_argument("--mirror", default=None,
                   help="base URL to fetch <mirror>/<file name> from instead of the official links")
    p.add_argument("--check", choices=("full", "read"), default="full",
                   help="full: the file must load into its network (default); read: only the state dict is read")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from util.checkpoint import CheckpointError
    from util.cli import run_cli
    plan: dict = {}

    def check(args) -> None:
        """Bad options are refused (exit 2) before anything is downloaded."""
        plan["sources"] = with_mirror(ALL, args.mirror)
        plan["example"] = with_mirror({"example": EXAMPLE}, args.mirror)["example"]
        only = _resolve_only(args.only)
        if only:
            plan["names"] = select_parts(ALL, only)
        else:
            plan["names"] = list(MODELS) + (list(PRETRAINED) if args.pretrained else [])
        check_folder(args.output, "--output")
        if not args.no_example:
            if Path(args.example_output).is_dir():
                raise DownloadError(f"--example_output {args.example_output}: is a folder; give the file name of "
                                    f"the clip (e.g. example/example.mp4)")
            check_folder(Path(args.example_output).parent, "--example_output")

    def fetch(args) -> None:
        download_models(Path(args.output), plan["names"], plan["sources"], full_check=args.check == "full",
                        quiet=args.quiet)
        if not args.no_example:
            download_example(Path(args.example_output), plan["example"], quiet=args.quiet)

    return (run_cli(check, args, (DownloadError,), code=2)
            or run_cli(fetch, args, (DownloadError, CheckpointError), code=1, interrupted=RESUME_HINT))


if __name__ == "__main__":
    sys.exit(main())
