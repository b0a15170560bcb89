"""Small synthetic DAVIS-layout datasets and clips of moving, rotating textured objects (deterministic from a seed).

Layout written by :func:`generate_davis` under ``root`` (what the official evaluator and MiVOS's loader read)::

    JPEGImages/480p/<seq>/%05d.jpg      frames (the folder is called 480p at any resolution, as the package expects)
    Annotations/480p/<seq>/%05d.png     palette PNGs, 0 = background, 1..K objects (every object visible in frame 0)
    Scribbles/<seq>/%03d.json           official format: {"sequence", "scribbles": T lists of strokes}, made by the
                                        official InteractiveScribblesRobot against an all-background prediction
    ImageSets/2017/{val,train}.txt, ImageSets/2016/val.txt
    synthetic_meta.json                 {seq: {num_frames, num_objects, num_scribbles, image_size [W, H], set}}

``util.davis_compat.register_sequences(meta)`` makes the sequences evaluable by ``DavisInteractiveSession``.
:func:`make_clip` returns frames + labels in memory; :func:`write_video` / :func:`write_image_folder` save them.

CLI: ``python -m dataset.synthetic --out /tmp/synth_davis --sequences 2 --frames 8 --size 160 120``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from util.fileio import atomic_write_text
from util.palette import save_mask_png

__all__ = ["Clip", "make_clip", "generate_davis", "write_video", "write_image_folder", "initial_scribble",
           "scribble_frame_order", "SyntheticDataError", "META_FILE"]

META_FILE = "synthetic_meta.json"
_RESOLUTION = "480p"  # folder name hard-coded by davisinteractive, used whatever the real size is
_JPEG_QUALITY = 92


class SyntheticDataError(ValueError):
    """Bad generator arguments (one line, names the argument)."""


@dataclass
class Clip:
    """A rendered clip: ``frames`` T×H×W×3 uint8 RGB and ``labels`` T×H×W uint8 (0 background, 1..K objects)."""

    frames: np.ndarray
    labels: np.ndarray
    num_objects: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def image_size(self) -> list[int]:
        """``[W, H]`` as in davisinteractive's metadata."""
        return [int(self.frames.shape[2]), int(self.frames.shape[1])]


# ---------------------------------------------------------------------------------------------------------------
# textures and shapes
# ---------------------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, channels: int, cell: int) -> np.ndarray:
    """Band-limited noise in [0, 1]: random values on a coarse grid, bicubically upsampled (h×w×channels float32)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    coarse = rng.random((gh, gw, channels), dtype=np.float32)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(h, w, channels), 0.0, 1.0)


def _stripes(h: int, w: int, period: float, angle: float, phase: float) -> np.ndarray:
    """Sinusoidal stripes in [0, 1] (h×w float32)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    return (0.5 + 0.5 * np.sin(2 * math.pi * u / period + phase)).astype(np.float32)


def _hsv_colour(hue: float, sat: float, val: float) -> np.ndarray:
    hsv = np.array([[[hue * 180.0, sat * 255.0, val * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted, textured background (h×w×3 float32 in 0..255)."""
    cell = max(4, min(h, w) // 6)
    base = _smooth_noise(rng, h, w, 3, cell) * 110.0 + 60.0
    fine = _smooth_noise(rng, h, w, 1, max(2, cell // 5)) * 40.0 - 20.0
    stripes = _stripes(h, w, period=float(rng.uniform(0.15, 0.35) * min(h, w)),
                       angle=float(rng.uniform(0, math.pi)), phase=float(rng.uniform(0, 2 * math.pi)))
    colour = base + fine + (stripes[..., None] * 30.0 - 15.0)
    # halve the saturation so the (saturated) objects stand out, as in real footage
    return 0.5 * colour + 0.5 * colour.mean(axis=2, keepdims=True)


def _object_patch(rng: np.random.Generator, radius: float, hue: float) -> tuple[np.ndarray, np.ndarray]:
    """An object in its own frame: (texture S×S×3 float32, mask S×S uint8), shape centred at (S/2, S/2)."""
    size = int(math.ceil(radius * 2)) + 4
    centre = (size / 2.0, size / 2.0)
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision for the OpenCV drawing functions
    scale = 1 << shift
    if rng.random() < 0.5:
        axes = (radius, radius * float(rng.uniform(0.45, 0.9)))
        cv2.ellipse(mask, (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
                    (int(round(axes[0] * scale)), int(round(axes[1] * scale))), 0.0, 0.0, 360.0, 1, -1,
                    cv2.LINE_8, shift)
    else:
        n_tips = int(rng.integers(4, 8))
        inner = float(rng.uniform(0.45, 0.7))
        angles = np.arange(2 * n_tips) * math.pi / n_tips
        radii = np.where(np.arange(2 * n_tips) % 2 == 0, radius, radius * inner)
        pts = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts * scale).astype(np.int32)], 1, cv2.LINE_8, shift)

    colour = _hsv_colour(hue, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.7, 1.0)))
    second = _hsv_colour((hue + 0.5) % 1.0, 0.5, float(rng.uniform(0.3, 0.6)))
    if rng.random() < 0.5:
        pattern = _stripes(size, size, period=float(rng.uniform(0.25, 0.6) * radius),
                           angle=float(rng.uniform(0, math.pi)), phase=float(rng.uniform(0, 2 * math.pi)))
    else:
        pattern = _smooth_noise(rng, size, size, 1, max(2, int(radius / 3)))[..., 0]
    texture = colour * (1.0 - 0.6 * pattern[..., None]) + second * (0.6 * pattern[..., None])
    return texture.astype(np.float32), mask


def _triangle_wave(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into [lo, hi] (a point bouncing between two walls)."""
    span = np.maximum(np.asarray(hi, np.float64) - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


# ---------------------------------------------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------------------------------------------
def _check_positive(name: str, value: int, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise SyntheticDataError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def make_clip(num_frames: int = 8, width: int = 160, height: int = 120, num_objects: int = 2,
              seed: int | np.random.SeedSequence = 0) -> Clip:
    """Render ``num_frames`` frames of ``num_objects`` moving, rotating textured objects on a textured background.

    Deterministic from ``seed``. Every object is clearly visible in frame 0 (it may be occluded later).
    Returns a :class:`Clip` (frames T×H×W×3 uint8 RGB, labels T×H×W uint8).
    """
    num_frames = _check_positive("num_frames", num_frames)
    width = _check_positive("width", width, 16)
    height = _check_positive("height", height, 16)
    num_objects = _check_positive("num_objects", num_objects)
    if num_objects > 254:
        raise SyntheticDataError(f"num_objects={num_objects}: at most 254 objects fit in a palette PNG")
    rng = np.random.default_rng(seed)
    short = min(width, height)

    # a background larger than the frame, so the camera can pan slowly across it
    pan_margin = max(2, int(0.08 * short))
    background = _background(rng, height + 2 * pan_margin, width + 2 * pan_margin)
    pan_from = rng.uniform(0, 2 * pan_margin, size=2)
    pan_to = rng.uniform(0, 2 * pan_margin, size=2)

    # object sizes shrink with the number of objects so they fit side by side
    base_radius = short * 0.28 / math.sqrt(num_objects)
    hue0 = float(rng.random())
    patches = []
    for k in range(num_objects):
        radius = max(4.0, base_radius * float(rng.uniform(0.7, 1.3)))
        patches.append(_object_patch(rng, radius, (hue0 + k / num_objects) % 1.0) + (radius,))

    t = np.arange(num_frames, dtype=np.float64)
    speed = 0.035 * short
    motion = []
    for k, (_, _, radius) in enumerate(patches):
        lo = np.array([radius * 0.5, radius * 0.5])
        hi = np.array([width - radius * 0.5, height - radius * 0.5])
        direction = rng.uniform(0, 2 * math.pi)
        velocity = speed * float(rng.uniform(0.5, 1.5)) * np.array([math.cos(direction), math.sin(direction)])
        spin = float(rng.uniform(-12.0, 12.0))  # degrees per frame
        angle0 = float(rng.uniform(0, 360))
        motion.append((lo, hi, velocity, spin, angle0))

    # initial positions: retry until every object is visible enough in frame 0, then fall back to a grid
    starts = None
    for _ in range(60):
        cand = [rng.uniform([r, r], [width - r, height - r]) if width > 2 * r and height > 2 * r
                else np.array([width / 2.0, height / 2.0]) for _, _, r in patches]
        if _frame0_visible(cand, patches, motion, width, height):
            starts = cand
            break
    if starts is None:
        cols = math.ceil(math.sqrt(num_objects))
        rows = math.ceil(num_objects / cols)
        starts = [np.array([(k % cols + 0.5) * width / cols, (k // cols + 0.5) * height / rows])
                  for k in range(num_objects)]

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    for f in range(num_frames):
        a = f / max(num_frames - 1, 1)
        ox, oy = np.round(pan_from * (1 - a) + pan_to * a).astype(int)
        canvas = background[oy:oy + height, ox:ox + width].copy()
        label = labels[f]
        for k, ((texture, mask, radius), (lo, hi, velocity, spin, angle0)) in enumerate(zip(patches, motion)):
            centre = _triangle_wave(starts[k] + velocity * t[f], lo, hi)
            warped_tex, warped_mask = _place(texture, mask, centre, angle0 + spin * f, width, height)
            sel = warped_mask > 0
            canvas[sel] = warped_tex[sel]
            label[sel] = k + 1
        # mild sensor noise, so no region is perfectly flat
        canvas += rng.normal(0.0, 3.0, size=canvas.shape).astype(np.float32)
        frames[f] = np.clip(canvas, 0, 255).astype(np.uint8)
    return Clip(frames=frames, labels=labels, num_objects=num_objects)


def _affine(size: int, centre: np.ndarray, angle: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, 1.0)
    m[:, 2] += np.asarray(centre, np.float64) - size / 2.0
    return m


def _place(texture: np.ndarray, mask: np.ndarray, centre: np.ndarray, angle: float, width: int,
           height: int) -> tuple[np.ndarray, np.ndarray]:
    m = _affine(mask.shape[0], centre, angle)
    tex = cv2.warpAffine(texture, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    msk = cv2.warpAffine(mask, m, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return tex, msk


def _frame0_visible(starts, patches, motion, width: int, height: int) -> bool:
    """Every object keeps >= 60 % of its area (and >= 24 px) visible in frame 0 after occlusion and cropping."""
    label = np.zeros((height, width), np.uint8)
    areas = []
    for k, ((texture, mask, radius), (lo, hi, _, _, angle0)) in enumerate(zip(patches, motion)):
        centre = _triangle_wave(np.asarray(starts[k], np.float64), lo, hi)
        m = _affine(mask.shape[0], centre, angle0)
        warped = cv2.warpAffine(mask, m, (width, height), flags=cv2.INTER_NEAREST)
        label[warped > 0] = k + 1
        areas.append(int(mask.sum()))
    visible = np.bincount(label.ravel(), minlength=len(patches) + 1)[1:]
    return bool(np.all(visible >= np.maximum(24, 0.6 * np.asarray(areas))))


def write_image_folder(folder: str | os.PathLike, frames: np.ndarray, pattern: str = "{:05d}.jpg") -> list[Path]:
    """Write T×H×W×3 uint8 RGB ``frames`` as ``folder/00000.jpg`` ... (JPEG quality 92); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / pattern.format(i)
        ok = cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise OSError(f"{path}: could not write the image (check the extension and the folder permissions)")
        paths.append(path)
    return paths


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 24.0) -> Path:
    """Write T×H×W×3 uint8 RGB ``frames`` as an mp4 (``mp4v``) readable by OpenCV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (int(w), int(h)))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an mp4v video writer here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# ---------------------------------------------------------------------------------------------------------------
# scribbles
# ---------------------------------------------------------------------------------------------------------------
def scribble_frame_order(labels: np.ndarray, num_objects: int) -> list[int]:
    """Frames sorted by the area of their smallest object, largest first (ties: earlier frame first)."""
    t = labels.shape[0]
    counts = np.stack([np.bincount(labels[f].ravel(), minlength=256)[1:num_objects + 1] for f in range(t)])
    smallest = counts.min(axis=1)
    return [int(f) for f in np.argsort(-smallest, kind="stable")]


def _centroid_line(obj: np.ndarray) -> list[list[float]] | None:
    """A horizontal stroke through the object's pixels on the row nearest its centroid, normalised by (W, H)."""
    ys, xs = np.nonzero(obj)
    if len(ys) == 0:
        return None
    h, w = obj.shape
    cy, cx = ys.mean(), xs.mean()
    rows = np.unique(ys)
    row = int(rows[np.argmin(np.abs(rows - cy))])
    cols = np.nonzero(obj[row])[0]
    # the run of consecutive columns closest to the centroid column
    runs = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    run = min(runs, key=lambda r: np.abs(r - cx).min())
    x0, x1 = int(run[0]), int(run[-1])
    n = max(2, x1 - x0 + 1)
    xs_line = np.linspace(x0, x1, n)
    return [[float(x) / w, float(row) / h] for x in xs_line]


def initial_scribble(sequence: str, labels: np.ndarray, num_objects: int, frame: int) -> dict:
    """The first (human-like) scribble of a sample in the official format: positive strokes on ``frame``.

    Runs the official ``InteractiveScribblesRobot`` against an all-background prediction (so it draws one stroke
    per object component, no background strokes); an object the robot leaves without a stroke (too small for a
    skeleton of >= 4 nodes) gets a horizontal line through its centroid. Timestamps are fixed (deterministic).
    Returns ``{"sequence": sequence, "scribbles": [T lists of strokes]}``.
    """
    import util.davis_compat  # noqa: F401  (must precede davisinteractive: numpy/networkx shims, determinism)
    from davisinteractive.robot import InteractiveScribblesRobot

    gt = labels.astype(np.int64)
    robot = InteractiveScribblesRobot()
    data = robot.interact(sequence, np.zeros_like(gt), gt, nb_objects=num_objects, frame=frame)
    strokes = data["scribbles"][frame]
    present = {s["object_id"] for s in strokes}
    for obj_id in range(1, num_objects + 1):
        if obj_id not in present:
            path = _centroid_line(labels[frame] == obj_id)
            if path is not None:
                strokes.append({"path": path, "object_id": obj_id})
    strokes.sort(key=lambda s: s["object_id"])  # stable: the robot's order within an object is kept
    clock = 0
    for s in strokes:
        s["start_time"] = clock
        clock += 500 + 2 * len(s["path"])
        s["end_time"] = clock
        clock += 250
    scribbles = [[] for _ in range(labels.shape[0])]
    scribbles[frame] = strokes
    return {"scribbles": scribbles, "sequence": sequence}


# ---------------------------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------------------------
def _per_sequence(name: str, value, n: int) -> list[int]:
    values = [value] * n if np.isscalar(value) else list(value)
    if not values:
        raise SyntheticDataError(f"{name}: needs at least one value")
    return [int(values[i % len(values)]) for i in range(n)]


def generate_davis(root: str | os.PathLike, num_sequences: int = 2, num_frames: int | Sequence[int] = 8,
                   size: tuple[int, int] = (160, 120), num_objects: int | Sequence[int] = (2, 1),
                   num_scribbles: int | Sequence[int] = 1, seed: int = 0, num_train_sequences: int = 0,
                   prefix: str = "synth") -> dict[str, dict]:
    """Write a DAVIS-layout dataset under ``root`` and return its metadata (also written to ``synthetic_meta.json``).

    ``num_frames`` / ``num_objects`` / ``num_scribbles``: one value, or one per sequence (cycled). ``size`` is
    ``(W, H)``. ``num_sequences`` go to the val split, ``num_train_sequences`` more to train. Sequence ``i``'s
    content depends only on ``(seed, i)``. Returns ``{seq: {num_frames, num_objects, num_scribbles,
    image_size [W, H], set}}``.
    """
    num_sequences = _check_positive("num_sequences", num_sequences)
    if int(num_train_sequences) != num_train_sequences or num_train_sequences < 0:
        raise SyntheticDataError(f"num_train_sequences={num_train_sequences!r}: must be an integer >= 0")
    if len(size) != 2:
        raise SyntheticDataError(f"size={size!r}: expected (width, height)")
    width, height = int(size[0]), int(size[1])
    total = num_sequences + int(num_train_sequences)
    frames_per = _per_sequence("num_frames", num_frames, total)
    objects_per = _per_sequence("num_objects", num_objects, total)
    scribbles_per = _per_sequence("num_scribbles", num_scribbles, total)
    for i in range(total):
        _check_positive("num_scribbles", scribbles_per[i])

    root = Path(root)
    children = np.random.SeedSequence(int(seed)).spawn(total)
    meta: dict[str, dict] = {}
    splits: dict[str, list[str]] = {"val": [], "train": []}
    for i in range(total):
        seq = f"{prefix}-{i:03d}"
        subset = "val" if i < num_sequences else "train"
        clip = make_clip(frames_per[i], width, height, objects_per[i], seed=children[i])
        write_image_folder(root / "JPEGImages" / _RESOLUTION / seq, clip.frames)
        for f in range(clip.num_frames):
            save_mask_png(root / "Annotations" / _RESOLUTION / seq / f"{f:05d}.png", clip.labels[f])
        order = scribble_frame_order(clip.labels, clip.num_objects)
        for s in range(scribbles_per[i]):
            data = initial_scribble(seq, clip.labels, clip.num_objects, order[s % len(order)])
            atomic_write_text(root / "Scribbles" / seq / f"{s + 1:03d}.json", json.dumps(data))
        meta[seq] = {"num_frames": clip.num_frames, "num_objects": clip.num_objects,
                     "num_scribbles": scribbles_per[i], "image_size": clip.image_size, "set": subset}
        splits[subset].append(seq)

    atomic_write_text(root / "ImageSets" / "2017" / "val.txt", "".join(s + "\n" for s in splits["val"]))
    atomic_write_text(root / "ImageSets" / "2017" / "train.txt", "".join(s + "\n" for s in splits["train"]))
    atomic_write_text(root / "ImageSets" / "2016" / "val.txt", "".join(s + "\n" for s in splits["val"]))
    atomic_write_text(root / META_FILE, json.dumps(meta, indent=1, sort_keys=True))
    return meta


def _build_parser() -> argparse.ArgumentParser:
    from util.cli import CliParser
    p = CliParser(description="Generate a small synthetic DAVIS-layout dataset (deterministic).")
    p.add_argument("--out", help="dataset root to write (DAVIS layout); required unless --video")
    p.add_argument("--sequences", type=int, default=2, help="number of val sequences")
    p.add_argument("--train_sequences", type=int, default=0, help="number of extra train sequences")
    p.add_argument("--frames", type=int, nargs="+", default=[8], help="frames per sequence (cycled)")
    p.add_argument("--objects", type=int, nargs="+", default=[2, 1], help="objects per sequence (cycled)")
    p.add_argument("--scribbles", type=int, nargs="+", default=[1], help="scribble files per sequence (cycled)")
    p.add_argument("--size", type=int, nargs=2, default=[160, 120], metavar=("W", "H"), help="frame size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video", default=None,
                   help="instead of a dataset, write one clip as an mp4 (path ending in .mp4) or a JPEG folder")
    return p


def _validate(args: argparse.Namespace) -> None:
    """Every option checked (and the output location created) before anything is rendered."""
    from util import cli
    if not args.out and not args.video:
        raise cli.CliError("--out", None, "required (the dataset root to write)", "or pass --video PATH for one clip")
    if not args.video:
        cli.positive_int("--sequences", args.sequences)
    cli.non_negative_int("--train_sequences", args.train_sequences)
    for n in args.frames:
        cli.positive_int("--frames", n)
    for n in args.objects:
        cli.int_in_range("--objects", n, 1, 254, "a palette PNG holds objects 1..254")
    for n in args.scribbles:
        cli.positive_int("--scribbles", n)
    for n in args.size:
        cli.int_in_range("--size", n, 16, 8192, "give W H in pixels, e.g. --size 160 120")
    if args.video:
        if args.video.lower().endswith((".mp4", ".avi", ".mov")):
            cli.output_file("--video", args.video)
        else:
            cli.output_dir("--video", args.video)
    else:
        cli.output_dir("--out", args.out)


def main(argv: Sequence[str] | None = None) -> int:
    from util import cli
    args = _build_parser().parse_args(argv)

    def run(args: argparse.Namespace) -> int:
        _validate(args)
        if args.video:
            clip = make_clip(args.frames[0], args.size[0], args.size[1], args.objects[0], seed=args.seed)
            if args.video.lower().endswith((".mp4", ".avi", ".mov")):
                write_video(args.video, clip.frames)
            else:
                write_image_folder(args.video, clip.frames)
            print(f"wrote {clip.num_frames} frames to {args.video}")
            return 0
        meta = generate_davis(args.out, args.sequences, args.frames, tuple(args.size), args.objects,
                              args.scribbles, args.seed, args.train_sequences)
        print(f"wrote {len(meta)} sequences to {args.out} ({META_FILE})")
        return 0

    return cli.run_cli(run, args, (SyntheticDataError, OSError))


if __name__ == "__main__":
    sys.exit(main())
