"""Headless propagation: a video (file or image folder) + its first-frame mask → a mask for every frame.

    python propagate.py --video clip.mp4 --mask first.png --output masks/ [--overlay overlay.mp4]
    python propagate.py --images frames/ --mask frames_mask/00000.png --output masks/
    python propagate.py --batch videos/ --output masks/        # many videos; also under torchrun

* ``--mask``: the mask of the first frame at the video's own size: a palette PNG, a greyscale or 16-bit
  label map, or an RGB mask (one object per colour, black = background). Any non-zero ids (e.g. 3 and 7,
  or 1000 and 2000) are objects; they are propagated as objects 1..K and written back with their own
  ids and colours.
* Frames are processed at ``--resolution`` (shorter side, default 480; -1 keeps the original size). The
  masks are written at the ORIGINAL size: probabilities are un-padded, upsampled bilinearly, then argmax
  (as the original's DAVIS 2017 evaluation). Frame 0 is the given mask itself.
* Output: ``<output>/<name>.png`` palette PNGs (the mask's own palette or colours; DAVIS palette for a
  greyscale mask), 16-bit greyscale PNGs when the ids exceed 255; ``<name>`` = the frame file's stem for an
  image folder, ``%05d`` for a video; ``--overlay FILE.mp4``: the frames with the masks blended in.
* ``--batch FOLDER``: every frame folder and video file ``NAME`` in FOLDER with its first-frame mask
  ``FOLDER/NAME.png``; ``--batch LIST.txt``: lines ``SOURCE MASK``. Masks go to ``<output>/<NAME>/``, a
  summary to ``<output>/batch_report.json``; finished videos are recorded in ``<output>/.done/`` and
  skipped when the same command is run again; a video that fails is reported there and the others go on
  (exit code 1). Under ``torchrun`` the videos are shared among the processes (see the README).
* Propagation = the semi-supervised evaluation's (no fusion): memory = first frame + every ``--mem_freq``
  frames + the previous frame, top-k read.

Memory on long videos: frames are decoded lazily (bounded cache), query features are not cached beyond
the frame in use, probabilities are kept as uint16 and dropped once their frame's mask is written, and
masks are written as each frame is final. What still grows with the length: the memory bank (one
committed frame per ``--mem_freq`` frames: (128 + 512) × H/16 × W/16 floats per object, ~4 MB per object
at 480p) and the core's 1-byte-per-pixel label buffer; raise ``--mem_freq`` for very long videos.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from util import cli
from util.palette import DAVIS_PALETTE, MaskFile, read_mask, save_label_png

if TYPE_CHECKING:   # torch is imported where it is used, so bad arguments are refused in a fraction of a second
    import torch

DEFAULT_MODEL = "saves/propagation_model.pth"


class PropagateError(ValueError):
    """Bad input for propagate.py (one-line message naming the argument and the fix)."""


def read_first_mask(path: str | Path, size: tuple[int, int]) -> MaskFile:
    """The first-frame mask (``labels`` ``H×W`` uint8 or uint16 ids, ``size`` = (W, H) of the video; its
    ``ids``, and the ``palette`` / colours to write the outputs with)."""
    path = Path(path)
    if not path.is_file():
        raise PropagateError(f"--mask {path}: file not found; pass the first frame's mask (palette PNG or label map)")
    try:
        mask_file = read_mask(path)
    except ValueError as e:
        raise PropagateError(f"--mask {e}") from None
    except OSError as e:
        raise PropagateError(f"--mask {path}: cannot be read as an image ({type(e).__name__}); "
                             "pass a PNG label map") from None
    mask = mask_file.labels
    if mask.ndim != 2:
        raise PropagateError(f"--mask {path}: expected a single-channel label map, got shape {mask.shape}")
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        raise PropagateError(f"--mask {path}: mask is {mask.shape[1]}x{mask.shape[0]} but the video is "
                             f"{size[0]}x{size[1]}; give the first frame's mask at the video's own size")
    if not mask_file.ids:
        raise PropagateError(f"--mask {path}: the mask is empty (every pixel is 0); label at least one object "
                             "with a non-zero id")
    return mask_file


def onehot_at(mask: np.ndarray, ids: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Label map → ``K×1×h×w`` float one-hot at the processing ``size`` (w, h), nearest resize."""
    import torch
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        mask = cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(np.stack([mask == i for i in ids])).float().unsqueeze(1)


def overlay_frame(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
                  colours: np.ndarray | None = None) -> np.ndarray:
    """``H×W×3`` uint8 RGB with each object blended in its colour: ``colours[id]`` (``N×3``, the written
    PNG's colours, :meth:`MaskFile.colour_lut`), the DAVIS palette by default."""
    colours = (DAVIS_PALETTE if colours is None else colours)[labels].astype(np.float32)
    out = frame.astype(np.float32)
    sel = labels > 0
    out[sel] = out[sel] * (1 - alpha) + colours[sel] * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


class OverlayWriter:
    """mp4 writer of the overlay, reading the original frames from its own sequential source.

    The video is written to a hidden temporary name in the same folder (``.<name>.<pid>.tmp.mp4``) and
    renamed to ``path`` by ``close(complete=True)``: an interrupted or killed run never leaves an
    unplayable file under the final name (``close(complete=False)`` deletes the partial file)."""

    def __init__(self, path: Path, source, fps: float, colours: np.ndarray | None = None):
        self.path = path
        self.source = source
        self.colours = colours
        w, h = source.original_size
        path.parent.mkdir(parents=True, exist_ok=True)
        # the container is chosen from the extension, so the temporary name keeps .mp4
        self.tmp_path = path.parent / f".{path.stem}.{os.getpid()}.tmp{path.suffix}"
        self.writer = cv2.VideoWriter(str(self.tmp_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                      (int(w), int(h)))
        if not self.writer.isOpened():
            self._discard()
            raise PropagateError(f"--overlay {path}: OpenCV cannot write an mp4 there; check the folder and the .mp4 name")

    def write(self, t: int, labels: np.ndarray) -> None:
        frame = self.source.read_original(t)
        self.writer.write(cv2.cvtColor(overlay_frame(frame, labels, colours=self.colours), cv2.COLOR_RGB2BGR))

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def close(self, complete: bool = True) -> None:
        """Finish the file; ``complete``: publish it under ``path``, else delete it."""
        self.writer.release()
        if complete:
            os.replace(self.tmp_path, self.path)
        else:
            self._discard()


def frame_names(source) -> list[str]:
    """Output names: the frame files' stems for an image folder, ``%05d`` for a video."""
    files = getattr(source, "files", None)
    return [f.stem for f in files] if files is not None else [f"{t:05d}" for t in range(len(source))]


def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description=(__doc__ or "").split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="a video file readable by OpenCV (.mp4, .avi, ...)")
    src.add_argument("--images", help="a folder of frames (sorted .jpg, or .png when there is no .jpg)")
    src.add_argument("--batch", help="many videos: a folder (each video file or frame folder NAME with its mask "
                                     "NAME.png beside it) or a list file (lines: SOURCE MASK); runs under torchrun")
    p.add_argument("--mask", help="first-frame mask at the video's size (palette PNG or label map); "
                                  "not with --batch")
    p.add_argument("--output", required=True, help="folder for the per-frame palette PNGs "
                                                   "(--batch: OUTPUT/NAME/ per video)")
    p.add_argument("--overlay", default=None, help="also write an overlay video (.mp4) here")
    p.add_argument("--model", default=DEFAULT_MODEL, help="propagation checkpoint (propagation_model.pth)")
    p.add_argument("--resolution", type=int, default=480, help="processing size, shorter side (-1: original size); the longer side is "
                   "bounded to 4x this (very elongated frames are processed smaller)")
    p.add_argument("--top_k", type=int, default=50, help="memory entries read per query position (default 50)")
    p.add_argument("--no_top", action="store_true", help="plain softmax over all memory (no top-k)")
    p.add_argument("--mem_freq", type=int, default=5, help="commit a frame to memory every N frames (default 5)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="network precision (float32 = the original's numbers; float16 needs CUDA)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Every argument check that needs no network or frame decoding (run first, in a fraction of a
    second). Creates ``--output`` (and the overlay's folder) so an unwritable location fails now."""
    cli.positive_int("--mem_freq", args.mem_freq)
    if not args.no_top:
        cli.positive_int("--top_k", args.top_k)
    cli.resolution("--resolution", args.resolution)
    if args.images is not None:
        cli.input_dir("--images", args.images, "frame folder", "pass a folder of .jpg/.png frames")
    else:
        cli.input_file("--video", args.video, "video", "pass an existing video or --images FOLDER")
    cli.input_file("--mask", args.mask, "mask", "pass the first frame's mask (palette PNG or label map)")
    cli.input_file("--model", args.model, "checkpoint",
                   "download it with python download_model.py or pass --model PATH")
    inputs = {"--images": args.images, "--video": args.video, "--mask": args.mask}
    if args.overlay is not None:
        cli.output_file("--overlay", args.overlay, {**inputs, "--model": args.model}, suffixes=(".mp4",))
    cli.output_dir("--output", args.output, inputs)


def validate_batch_args(args: argparse.Namespace) -> None:
    """The checks of ``--batch`` that need no network or frame decoding (the list itself is read next)."""
    if args.mask is not None or args.overlay is not None:
        flag, value = ("--mask", args.mask) if args.mask is not None else ("--overlay", args.overlay)
        raise cli.CliError(flag, value, "not with --batch (each video's mask is NAME.png beside it, or the "
                           "second column of the list)", "drop it")
    cli.positive_int("--mem_freq", args.mem_freq)
    if not args.no_top:
        cli.positive_int("--top_k", args.top_k)
    cli.resolution("--resolution", args.resolution)
    cli.input_file("--model", args.model, "checkpoint",
                   "download it with python download_model.py or pass --model PATH")
    if args.device is not None:
        cli.device("--device", args.device)
    if not Path(args.batch).expanduser().exists():   # before --output is created
        raise cli.CliError("--batch", args.batch, "not found", "give a folder of videos or a list file")
    cli.output_dir("--output", args.output, {"--batch": args.batch})


def run(args: argparse.Namespace) -> int:
    if args.batch:
        validate_batch_args(args)
        return run_batch_videos(args)
    validate_args(args)
    from util.video_io import open_frames

    device = cli.device("--device", args.device)
    source = open_frames(args.images, args.video, args.resolution, cache_frames=4)
    if source.notice:
        print(f"warning: {source.notice}", file=sys.stderr)
    mask_file = read_first_mask(args.mask, source.original_size)
    mask0, ids = mask_file.labels, mask_file.ids
    if mask_file.colours:
        print("mask colours → objects: " + ", ".join(f"{i} = #{r:02x}{g:02x}{b:02x}"
                                                      for i, (r, g, b) in mask_file.colours.items()))
    num_frames = len(source)
    width, height = source.original_size
    names = frame_names(source)
    lost = [i for i, ch in zip(ids, onehot_at(mask0, ids, source.size)) if ch.sum() == 0]
    if lost:
        print(f"warning: object(s) {lost} vanish at the processing size {source.size[0]}x{source.size[1]}; "
              "use a larger --resolution", file=sys.stderr)

    from model.factory import load_propagation
    net = load_propagation(args.model, device, top_k=None if args.no_top else args.top_k)
    out_dir = Path(args.output)
    overlay = None
    if args.overlay:
        overlay_source = open_frames(args.images, args.video, -1, cache_frames=1)
        overlay = OverlayWriter(Path(args.overlay), overlay_source, getattr(source, "fps", 25.0) or 25.0,
                                colours=mask_file.colour_lut())

    import progressbar
    bar = progressbar.ProgressBar(max_value=num_frames) if not args.quiet else None
    start = time.time()
    complete = False
    try:
        stats = propagate_to_files(net, source, mask0, ids, out_dir, names, args.mem_freq, device, overlay,
                                   (lambda t: bar.update(t + 1)) if bar is not None else None, args.precision,
                                   palette=mask_file.palette)
        complete = True
    finally:
        if overlay is not None:
            overlay.close(complete)
        if bar is not None:
            bar.finish()
    elapsed = time.time() - start
    print(f"{num_frames} frame{'s' if num_frames != 1 else ''}, {len(ids)} object(s) {ids}, processed at {source.size[0]}x{source.size[1]}, "
          f"written at {width}x{height} to {out_dir}" + (f" and {args.overlay}" if args.overlay else "")
          + f"; {elapsed:.1f} s ({num_frames / max(elapsed, 1e-9):.2f} fps); peak stored probabilities "
          f"{stats['peak_prob_bytes'] / 2**20:.1f} MiB")
    return 0


def propagate_to_files(net: torch.nn.Module, source, mask0: np.ndarray, ids: Sequence[int], out_dir: Path,
                       names: Sequence[str], mem_freq: int, device: torch.device,
                       overlay: OverlayWriter | None = None, progress=None, precision: str = "float32",
                       palette: np.ndarray | None = None) -> dict:
    """Propagate ``mask0`` (``H×W`` ids at the original size, uint8 or uint16) through ``source`` (a frame
    source at the processing size with ``original_size``) and write ``out_dir/<names[t]>.png`` as each
    frame is final (palette PNGs with ``palette`` for uint8 ids, 16-bit PNGs for uint16 ids).
    Returns ``{"frames", "peak_prob_bytes", "peak_feature_bytes"}`` (what the run kept in memory)."""
    import torch

    from inference_core.core import InferenceCore
    from inference_core.semisup import frame_labels, propagate_first_frame

    width, height = source.original_size
    onehot = onehot_at(mask0, ids, source.size)
    # object index → the mask's own id; ids above 255 (16-bit label maps) stay 16-bit
    id_of = np.array([0, *ids], dtype=np.uint8 if max(ids, default=0) <= 255 else np.uint16)
    peak_prob = peak_feat = 0
    # built outside inference mode: the core moves the network's weights (device, memory layout), and
    # weights created in inference mode could not be used with autograd afterwards. Features are read
    # once per frame going forward: no feature cache beyond the frame in use.
    core = InferenceCore(net, None, source, len(ids), mem_freq=mem_freq, device=device,
                         feature_cache_bytes=0, prob_storage="uint16", precision=precision)
    with torch.inference_mode():
        def emit(t: int, labels: np.ndarray) -> None:
            save_label_png(out_dir / f"{names[t]}.png", labels, palette)
            if overlay is not None:
                overlay.write(t, labels)
            if progress is not None:
                progress(t)

        emit(0, mask0)
        for t, _ in propagate_first_frame(core, onehot):
            peak_prob = max(peak_prob, core.prob_bytes)
            peak_feat = max(peak_feat, core.feature_bytes)
            emit(t, id_of[frame_labels(core.get_prob(t), core.pad, (height, width))])
            core.release_frame(t)
            core.release_frame(0)   # the first frame's probabilities are in its memory already
    return {"frames": len(source), "peak_prob_bytes": peak_prob, "peak_feature_bytes": peak_feat}


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class BatchVideo:
    """One video of ``--batch``: its output ``name``, a frame folder or a video file, its first-frame mask."""
    name: str
    source: Path
    is_folder: bool
    mask: Path


def list_batch(spec: str | Path) -> list[BatchVideo]:
    """The videos of ``--batch``.

    * a folder: every sub-folder (frames) and every video file (``.mp4``, ``.avi``, …) ``NAME`` in it,
      sorted, with its mask ``NAME.png`` in the same folder (a missing mask fails that video only);
    * a text file: one video per line, ``SOURCE MASK`` (tab-separated when a path has spaces, else
      whitespace), paths relative to the list's folder; ``#`` starts a comment. ``NAME`` is the frame
      folder's name or the video file's stem and must be unique."""
    spec = Path(spec).expanduser()
    videos: list[BatchVideo] = []
    if spec.is_dir():
        for entry in sorted(spec.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                videos.append(BatchVideo(entry.name, entry, True, spec / f"{entry.name}.png"))
            elif entry.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(BatchVideo(entry.stem, entry, False, spec / f"{entry.stem}.png"))
        if not videos:
            raise PropagateError(f"--batch {spec}: no frame folder or video file ({', '.join(VIDEO_SUFFIXES[:3])}, …) "
                                 "in it; put each video with its first-frame mask NAME.png there")
    elif spec.is_file():
        try:
            lines = spec.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PropagateError(f"--batch {spec}: cannot be read as a text list ({type(e).__name__})") from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split("\t") if "\t" in text else text.split()
            fields = [f.strip() for f in fields if f.strip()]
            if len(fields) != 2:
                raise PropagateError(f"--batch {spec}: line {number} has {len(fields)} field(s); write SOURCE MASK "
                                     "(tab-separated when a path has spaces)")
            source, mask = (spec.parent / Path(f).expanduser() for f in fields)
            is_folder = source.is_dir()
            videos.append(BatchVideo(source.name if is_folder else source.stem, source, is_folder, mask))
        if not videos:
            raise PropagateError(f"--batch {spec}: the list is empty; write one line SOURCE MASK per video")
    else:
        raise PropagateError(f"--batch {spec}: not found; give a folder of videos or a list file")
    seen: dict[str, BatchVideo] = {}
    for v in videos:
        if v.name in seen:
            raise PropagateError(f"--batch {spec}: two videos are named {v.name!r} ({seen[v.name].source} and "
                                 f"{v.source}); their outputs would collide, rename one")
        seen[v.name] = v
    return videos


def _count_frames(video: BatchVideo, resolution: int) -> int:
    """Frames of a batch video for balancing the ranks (0 when it cannot be opened: it fails later)."""
    from util.video_io import open_frames
    try:
        return len(open_frames(str(video.source) if video.is_folder else None,
                               None if video.is_folder else str(video.source), resolution, cache_frames=1))
    except (OSError, ValueError):
        return 0


def run_batch_videos(args: argparse.Namespace) -> int:
    """``--batch``: every video to ``<output>/<name>/``, sharded over the torchrun processes and resumable
    (see :mod:`util.batch`); rank 0 writes ``<output>/batch_report.json``."""
    from model.factory import load_propagation
    from util.batch import (WorkItem, file_identity, init_batch, report_failures, run_batch, shutdown_batch,
                            summary_line)
    from util.fileio import atomic_write_text, remove_partial_writes
    from util.video_io import open_frames

    videos = list_batch(args.batch)
    out_root = Path(args.output)
    out_root.mkdir(parents=True, exist_ok=True)
    ctx = init_batch(args.device)
    try:
        device = ctx.device
        top_k = None if args.no_top else args.top_k
        net = load_propagation(args.model, device, top_k=top_k)
        settings = {"job": "propagate", "model": file_identity(args.model), "resolution": args.resolution,
                    "top_k": top_k, "mem_freq": args.mem_freq, "precision": args.precision}
        items = [WorkItem(v.name, _count_frames(v, args.resolution), v) for v in videos]

        def process(item: WorkItem, data: None) -> dict:
            v: BatchVideo = item.payload
            source = open_frames(str(v.source) if v.is_folder else None, None if v.is_folder else str(v.source),
                                 args.resolution, cache_frames=4)
            mask_file = read_first_mask(v.mask, source.original_size)
            ids = mask_file.ids
            remove_partial_writes(out_root / v.name)   # left by a run killed while it wrote this video
            stats = propagate_to_files(net, source, mask_file.labels, ids, out_root / v.name, frame_names(source),
                                       args.mem_freq, device, precision=args.precision, palette=mask_file.palette)
            result = {"frames": stats["frames"], "objects": ids, "size": list(source.original_size),
                      "processed_at": list(source.size)}
            if mask_file.colours:   # an RGB mask: which colour became which object id
                result["colours"] = {str(i): "#%02x%02x%02x" % c for i, c in mask_file.colours.items()}
            return result

        start = time.time()
        outcome = run_batch(ctx, items, process, out_root, settings, progress=not args.quiet)
        if ctx.is_main:
            report = {"videos": {n: ({"status": "ok", **r["result"]} if r["status"] == "ok"
                                     else {"status": "failed", "error": r.get("error")})
                                 for n, r in outcome.records.items()},
                      "ok": len(outcome.results), "failed": len(outcome.failed)}
            atomic_write_text(out_root / "batch_report.json", json.dumps(report, indent=1) + "\n")
            report_failures(outcome)
            print(summary_line(outcome, elapsed_s=time.time() - start), file=sys.stderr)
        return outcome.exit_code
    finally:
        shutdown_batch(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # CliError, PropagateError, FrameSourceError (video_io), a frame too small for the top-k read, ...
    return cli.run_cli(run, args, (ValueError, "util.checkpoint:CheckpointError"))


if __name__ == "__main__":
    sys.exit(main())
