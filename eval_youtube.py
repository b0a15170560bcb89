"""Semi-supervised YouTube-VOS evaluation of the propagation network (Mask-Propagation ``eval_youtube.py``).

YouTube-VOS is not DAVIS: objects may first appear after frame 0 and at different frames, ids are not
consecutive, and 0 means "no label". Every frame (``all_frames``) is processed at shorter side 480:

* ids are remapped to 1..K, and each object starts its own memory at its first annotated frame
  (``inference_core.semisup.PerObjectPropagation``); propagation runs from each annotated frame up to
  and including the next one, where the newly annotated objects' ground truth wins;
* probabilities are bilinearly upsampled to the original size, argmax, mapped back to the original ids;
* only frames from the first annotated one on are written, ``<output>/<video>/<frame name>.png``, with the
  palette of ``<yv>/<split>/Annotations/0a49f5265b/00000.png`` (DAVIS palette if that file is absent).

Runs as one process or under ``torchrun``; finished videos are recorded in ``<output>/.done`` (leave it
out of the zip) and skipped when the same command runs again (:mod:`util.batch`).

Submit the zipped output folder to the YouTube-VOS server (no ground truth is public for valid).

    python eval_youtube.py --yv ../YouTube --output results/yv_valid
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from eval_davis import DEFAULT_MODEL, KM_SIGMA, load_network
from util import cli
from util.fileio import remove_partial_writes
from util.palette import DAVIS_PALETTE_BYTES, save_mask_png

if TYPE_CHECKING:   # torch is imported where it is used, so bad arguments are refused in a fraction of a second
    import torch

PALETTE_SOURCE = "Annotations/0a49f5265b/00000.png"


def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="propagation checkpoint (propagation_model.pth)")
    p.add_argument("--yv", default="../YouTube", help="YouTube-VOS root (holds <split>/ and all_frames/)")
    p.add_argument("--output", required=True, help="output folder: <output>/<video>/<frame>.png")
    p.add_argument("--split", default="valid", help="valid (default) or test")
    p.add_argument("--top_k", type=int, default=50, help="memory entries read per query position (default 50)")
    p.add_argument("--no_top", action="store_true", help="plain softmax over all memory (no top-k)")
    p.add_argument("--use_km", action="store_true", help=f"kernelised memory read (σ = {KM_SIGMA})")
    p.add_argument("--mem_freq", type=int, default=5, help="commit a frame to memory every N frames (default 5)")
    p.add_argument("--short_side", type=int, default=480, help="processing size, shorter side (default 480; -1: original)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading processes (0: load in the main process)")
    p.add_argument("--video", action="append", default=None, help="evaluate only this video (repeatable)")
    return p


def read_palette(yv: Path, split: str) -> bytes:
    from PIL import Image
    path = yv / split / PALETTE_SOURCE
    if path.is_file():
        with Image.open(path) as im:
            pal = im.getpalette()
        if pal:
            return bytes(pal)
    return DAVIS_PALETTE_BYTES


def propagate_video(net: torch.nn.Module, data: dict, mem_freq: int, device: torch.device) -> tuple[np.ndarray, int]:
    """One video → (``T×H×W`` uint8 masks at the original size with the original ids, first annotated frame)."""
    import torch

    from inference_core.semisup import PerObjectPropagation, frame_labels

    info = data["info"]
    rgb, gt = data["rgb"], data["gt"]                           # T×3×H×W, K×T×1×H×W
    k = len(info["labels"])
    num_frames = rgb.shape[0]
    annotated = sorted(info["gt_obj"])
    if k == 0 or not annotated:
        return np.zeros((num_frames, *info["size"]), np.uint8), num_frames
    first = annotated[0]
    runner = PerObjectPropagation(net, rgb.unsqueeze(0), k, mem_freq=mem_freq, device=device)
    for i, frame in enumerate(annotated):
        objects = [info["label_convert"][v] for v in info["gt_obj"][frame]]
        if not objects:
            continue
        onehot = gt[:, frame]                                    # K×1×H×W
        with_bg = torch.cat([1 - onehot.sum(0, keepdim=True), onehot], 0)
        end = annotated[i + 1] + 1 if i + 1 < len(annotated) else num_frames
        runner.interact(with_bg, frame, end, objects)
    backward = [info["label_backward"][i] for i in range(1, k + 1)]
    size = tuple(int(s) for s in info["size"])
    masks = np.stack([frame_labels(runner.get_prob(t), runner.pad, size, backward) for t in range(num_frames)])
    return masks, first


def validate_args(args: argparse.Namespace) -> None:
    """Argument checks that need no network (run first, in a fraction of a second)."""
    cli.positive_int("--mem_freq", args.mem_freq)
    if not args.no_top:
        cli.positive_int("--top_k", args.top_k)
    if args.short_side > 0:   # 0 or -1: the original size
        cli.resolution("--short_side", args.short_side)
    cli.non_negative_int("--num_workers", args.num_workers)
    cli.input_dir("--yv", args.yv, "YouTube-VOS root", "pass the YouTube-VOS root with --yv")
    cli.input_file("--model", args.model, "checkpoint", "download it with python download_model.py or pass --model PATH")
    if args.device is not None:
        cli.device("--device", args.device)
    cli.output_dir("--output", args.output, {"--yv": args.yv})


def run(args: argparse.Namespace) -> int:
    validate_args(args)
    from dataset.yv_test_dataset import YouTubeVOSTestDataset

    yv = Path(args.yv).expanduser()
    out_dir = Path(args.output)
    dataset = YouTubeVOSTestDataset(yv, args.split, short_side=args.short_side if args.short_side > 0 else None)
    if args.video:
        missing = sorted(set(args.video) - set(dataset.videos))
        if missing:
            raise cli.CliError("--video", missing[0], f"not in {dataset.image_dir}", "give a video of the split")
        dataset.videos = [v for v in dataset.videos if v in args.video]
    palette = read_palette(yv, args.split)
    from util.batch import init_batch, shutdown_batch
    ctx = init_batch(args.device)
    try:
        return _run_videos(args, ctx, dataset, palette, out_dir)
    finally:
        shutdown_batch(ctx)


def _run_videos(args: argparse.Namespace, ctx, dataset, palette: bytes, out_dir: Path) -> int:
    """This rank's share of the videos (see :mod:`util.batch`); rank 0 prints the merged timing."""
    import torch

    from util.batch import WorkItem, dataset_loader, file_identity, report_failures, run_batch, summary_line

    device = ctx.device
    net = load_network(args.model, None if args.no_top else args.top_k, args.use_km, device)
    settings = {"job": "eval_youtube", "model": file_identity(args.model),
                "root": str(Path(args.yv).expanduser().resolve()), "split": args.split,
                "top_k": None if args.no_top else args.top_k, "use_km": args.use_km, "mem_freq": args.mem_freq,
                "short_side": args.short_side}
    items = [WorkItem(name, len(dataset.frames[name]), index) for index, name in enumerate(dataset.videos)]

    def process(item: WorkItem, data: dict) -> dict:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.time()
        with torch.inference_mode():
            masks, first = propagate_video(net, data, args.mem_freq, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.time() - start
        video_dir = out_dir / data["info"]["name"]
        remove_partial_writes(video_dir)   # left by a run killed while it wrote this video
        for t in range(first, masks.shape[0]):
            save_mask_png(video_dir / (Path(data["info"]["frames"][t]).stem + ".png"), masks[t], palette)
        return {"frames": int(masks.shape[0] - first), "time_s": elapsed}

    run_start = time.time()
    outcome = run_batch(ctx, items, process, out_dir, settings, load=dataset_loader(dataset),
                        num_workers=args.num_workers)
    if ctx.is_main:
        results = outcome.results.values()
        total_time = sum(r["time_s"] for r in results)
        total_frames = sum(r["frames"] for r in results)
        fps = total_frames / total_time if total_time > 0 else float("nan")
        print(f"Total processing time: {total_time:.2f} s, processed frames: {total_frames}, FPS: {fps:.2f}")
        report_failures(outcome)
        print(summary_line(outcome, elapsed_s=time.time() - run_start), file=sys.stderr)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(run, args, (ValueError, "dataset.layout:DatasetError", "util.checkpoint:CheckpointError"))


if __name__ == "__main__":
    sys.exit(main())
