"""Show the propagation network's dense correspondence between two images.

Interactive (needs an OpenCV build with GUI support)::

    python try_correspondence.py --src_image A.jpg --tar_image B.jpg --model saves/propagation_model.pth

Hover over (or click) a point of either window: the other window shows where it matches (softmax
affinity of the memory key of one image against the query key of the other, at 1/16 resolution).
Esc or q quits.

Headless: ``--points x,y [x,y ...] --output DIR`` writes one PNG per source point (source with the
point marked | target with the heat map); ``--reverse`` takes the points on the target instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from util import cli


class UsageError(ValueError):
    """Bad command-line input; the message is one line."""


def _parse_point(text: str) -> tuple[int, int]:
    try:
        x, y = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not of the form x,y; give pixel points such as 120,64") from None
    return x, y


def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src_image", required=True, help="source image (memory side)")
    p.add_argument("--tar_image", required=True, help="target image (query side)")
    p.add_argument("--model", default="saves/propagation_model.pth", help="propagation network weights")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--points", nargs="+", type=_parse_point, metavar="X,Y",
                   help="headless mode: pixel points (x = column, y = row) on the source image")
    p.add_argument("--reverse", action="store_true", help="headless mode: the points are on the target image")
    p.add_argument("--output", type=Path, help="headless mode: folder for the PNG overlays")
    return p


def read_rgb(path: str, arg: str) -> np.ndarray:
    """``H×W×3`` uint8 RGB of an image file; :class:`UsageError` names the argument if unreadable."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy
    except FileNotFoundError:
        raise UsageError(f"{arg} {path}: file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"{arg} {path}: cannot read the image ({type(e).__name__}); give a JPEG/PNG file") from None


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from util.fileio import atomic_write_bytes
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def check_points(points, image: np.ndarray, which: str) -> None:
    """Raise :class:`UsageError` for the first point outside ``image`` (``H×W×3``)."""
    for x, y in points:
        if not (0 <= x < image.shape[1] and 0 <= y < image.shape[0]):
            raise UsageError(f"--points {x},{y}: outside the {which} image ({image.shape[1]}x{image.shape[0]}); "
                             "x is the column, y the row")


def run_headless(corr, src: np.ndarray, tar: np.ndarray, points, reverse: bool, output: Path) -> list[Path]:
    """Write one PNG per point (image with the point | other image with the heat map) into ``output``."""
    from util.heatmap import mark_point, overlay_heatmap, side_by_side
    here, there = (tar, src) if reverse else (src, tar)
    check_points(points, here, "target" if reverse else "source")
    written = []
    for i, (x, y) in enumerate(points):
        heat = (corr.target_to_source(x, y) if reverse else corr.source_to_target(x, y)).cpu().numpy()
        panel = side_by_side(mark_point(here, x, y), overlay_heatmap(there, heat))
        path = output / f"point_{i:02d}_x{x}_y{y}.png"
        _write_png(path, panel)
        written.append(path)
    return written


def open_windows() -> None:
    """Create the two OpenCV windows (done before the slow model load, so a missing GUI fails fast)."""
    import cv2
    try:
        cv2.namedWindow("Source")
        cv2.namedWindow("Target")
    except cv2.error:
        raise UsageError("this OpenCV build has no GUI support (opencv-python-headless); "
                         "use --points X,Y ... --output DIR for PNG overlays") from None


def run_gui(corr, src: np.ndarray, tar: np.ndarray) -> None:
    """Event loop of the two windows opened by :func:`open_windows`; Esc / q / closing a window quits."""
    import cv2

    from util.heatmap import mark_point, overlay_heatmap
    bgr = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2BGR)  # noqa: E731
    state = {"changed": True, "views": (src, tar)}

    def on_mouse(window: str):
        def callback(event, x, y, flags, param):
            if event not in (cv2.EVENT_MOUSEMOVE, cv2.EVENT_LBUTTONDOWN):
                return
            if window == "Source" and 0 <= x < src.shape[1] and 0 <= y < src.shape[0]:
                state["views"] = (mark_point(src, x, y), overlay_heatmap(tar, corr.source_to_target(x, y).cpu().numpy()))
            elif window == "Target" and 0 <= x < tar.shape[1] and 0 <= y < tar.shape[0]:
                state["views"] = (overlay_heatmap(src, corr.target_to_source(x, y).cpu().numpy()), mark_point(tar, x, y))
            else:
                return
            state["changed"] = True
        return callback

    cv2.setMouseCallback("Source", on_mouse("Source"))
    cv2.setMouseCallback("Target", on_mouse("Target"))
    while True:
        if state["changed"]:
            cv2.imshow("Source", bgr(state["views"][0]))
            cv2.imshow("Target", bgr(state["views"][1]))
            state["changed"] = False
        key = cv2.waitKey(15) & 0xFF
        closed = any(cv2.getWindowProperty(w, cv2.WND_PROP_VISIBLE) < 1 for w in ("Source", "Target"))
        if key in (27, ord("q")) or closed:
            break
    cv2.destroyAllWindows()


def run(args: argparse.Namespace) -> int:
    if (args.points is None) != (args.output is None):
        raise cli.CliError("--points" if args.output is None else "--output", None,
                           "--points and --output go together (headless mode)", "give both or neither")
    cli.input_file("--src_image", args.src_image, "image")
    cli.input_file("--tar_image", args.tar_image, "image")
    if args.device is not None:   # (needs torch: only when a device is named)
        cli.device("--device", args.device)
    src = read_rgb(args.src_image, "--src_image")
    tar = read_rgb(args.tar_image, "--tar_image")
    # input checks before the (slow) model load
    if args.points is not None:
        check_points(args.points, tar if args.reverse else src, "target" if args.reverse else "source")
        cli.output_dir("--output", args.output, {"--src_image": args.src_image, "--tar_image": args.tar_image})
    else:
        open_windows()

    from model.factory import load_correspondence
    from model.propagation.corr_network import Correspondence
    from util.image_util import normalize_frames
    device = cli.device("--device", args.device)
    net = load_correspondence(args.model, device)
    corr = Correspondence(net, normalize_frames(src, device), normalize_frames(tar, device))
    if args.points is not None:
        for path in run_headless(corr, src, tar, args.points, args.reverse, args.output):
            print(path)
    else:
        run_gui(corr, src, tar)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(run, args, (UsageError, "util.checkpoint:CheckpointError"))


if __name__ == "__main__":
    sys.exit(main())
