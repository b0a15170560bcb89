"""Generate fusion training data: propagation without fusion from reference frames of DAVIS or BL30K.

For every video and every reference frame ``0, S, 2S, …`` (``S = --separation``), the ground truth of
the objects visible there (> 100 pixels, at most the first 5) is propagated with the propagation
network alone (:class:`inference_core.fusion_generator.FusionGenerator`) over the whole video (DAVIS)
or over ``[ref − range, ref + range]`` (BL30K), and every frame's probability of every object is saved::

    <output>/<video>/<ref %05d>/<object label %05d>/<frame %05d>.png   (grey, uint8 = ⌊prob·255⌋)

``FusionDataset`` reads ``<fusion root>/<run>/<video>/...``, so make ``--output`` a run folder inside the
fusion root, e.g. ``../fusion_data/davis/s5_m5`` (stage 1, ``--fusion_root ../fusion_data/davis``) or
``../fusion_data/bl/s20_r40_m5`` (stage 0). Several runs with different parameters may sit side by side.

Runs as one process or under ``torchrun`` (videos shared among the processes by frame count, instead of
``--start/--end`` slices by hand); finished videos are recorded in ``<output>/.done`` (hidden, so the
fusion dataset ignores it) and skipped when the same command runs again (:mod:`util.batch`).

Examples::

    python generate_fusion.py --dataset DAVIS --davis_root ../DAVIS/2017 --separation 5 --mem_freq 5 \
        --output ../fusion_data/davis/s5_m5
    python generate_fusion.py --dataset BL --bl_root ../BL30K --separation 20 --range 40 --mem_freq 5 \
        --start 0 --end 4999 --output ../fusion_data/bl/s20_r40_m5

Parameters: the values used for the released fusion data / the paper are not recorded (the original
script has no defaults and the archive does not name them); the ones above are our recommendation:
``--mem_freq 5`` is the memory period of the GUI and the evaluations; a fusion sample needs two
references that reach each other, which for BL30K means ``--range >= --separation`` (pairs up to
``range/separation`` references apart); a smaller ``--separation`` gives more reference pairs at a
cost proportional to (#frames / separation) × #frames per video (DAVIS) or × 2·range (BL30K).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from util import cli
from util.fileio import atomic_path, remove_partial_writes

MIN_OBJECT_PIXELS = 10 * 10
MAX_OBJECTS = 5  # per reference frame, to bound memory (as the original)


def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="saves/propagation_model.pth", help="propagation network checkpoint")
    p.add_argument("--davis_root", default="../DAVIS/2017", help="DAVIS 2017 root (reads trainval, ImageSets/2017/train.txt)")
    p.add_argument("--bl_root", default="../BL30K", help="BL30K root (JPEGImages/, Annotations/)")
    p.add_argument("--dataset", required=True, choices=("DAVIS", "BL"), help="DAVIS (2017 train) or BL (BL30K)")
    p.add_argument("--output", required=True, help="run folder, e.g. ../fusion_data/davis/<run name>")
    p.add_argument("--separation", type=int, required=True, help="frames between reference frames (e.g. 5)")
    p.add_argument("--mem_freq", type=int, required=True, help="memory period in frames (e.g. 5)")
    p.add_argument("--range", type=int, default=None,
                   help="BL only (required there): propagate to frames within ±range of the reference (e.g. 40)")
    p.add_argument("--start", type=int, default=None, help="BL only: first video index (sorted names) of the slice")
    p.add_argument("--end", type=int, default=None, help="BL only: last video index, inclusive")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: cuda if available)")
    return p


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> None:
    """Every check that needs no network: numbers, input roots, the model file, the device; then the
    output folder is created (a bad location fails before any propagation)."""
    cli.positive_int("--separation", args.separation)
    cli.positive_int("--mem_freq", args.mem_freq)
    if args.dataset == "BL":
        if args.range is None:
            raise cli.CliError("--range", None, "required with --dataset BL",
                               "give the propagation range in frames, e.g. --range 40")
        cli.positive_int("--range", args.range)
        if (args.start is None) != (args.end is None):
            flag, value = ("--start", args.start) if args.start is not None else ("--end", args.end)
            raise cli.CliError(flag, value, "--start and --end go together",
                               "give both (an inclusive slice of the sorted BL30K videos) or neither")
        if args.start is not None:
            cli.non_negative_int("--start", args.start)
            cli.int_in_range("--end", args.end, low=args.start, fix="--end is the last index, at least --start")
        data_flag, data_root, layout = "--bl_root", args.bl_root, "the BL30K root (JPEGImages/, Annotations/)"
    else:
        data_flag, data_root, layout = ("--davis_root", args.davis_root,
                                        "the DAVIS 2017 root (trainval/JPEGImages/480p, trainval/ImageSets)")
    cli.input_dir(data_flag, data_root, "dataset root", f"pass {layout}")
    cli.input_file("--model", args.model, "checkpoint", "download it with python download_model.py or pass --model PATH")
    if args.device is not None:
        cli.device("--device", args.device)
    cli.output_dir("--output", args.output, {data_flag: data_root})


def save_probability_png(path: Path, prob_u8: np.ndarray) -> None:
    """Write an ``H×W`` uint8 map as a greyscale PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), prob_u8):
            raise OSError(f"{path}: could not write the PNG")


def write_video_passes(prop_net, rgb, gt, labels: Sequence[int], out_dir: Path, separation: int, mem_freq: int,
                       prop_range: int | None = None) -> int:
    """Fusion data of one video under ``out_dir`` (``<ref %05d>/<label %05d>/<frame %05d>.png``).

    ``rgb``: normalised frames ``T×3×H×W``; ``gt``: one-hot masks ``K×T×1×H×W`` on the network's device;
    ``labels``: the label value of each of the K objects. From every reference ``0, separation, …`` the
    visible objects' ground truth is propagated over the whole video (``prop_range`` None, DAVIS) or
    over ``[ref − range, ref + range]`` (BL30K). Returns the number of reference passes written.
    """
    import torch

    from inference_core.fusion_generator import FusionGenerator

    total_t = rgb.shape[0]
    passes = 0
    with torch.no_grad():
        generator = FusionGenerator(prop_net, rgb, mem_freq)
        for ref in range(0, total_t, separation):
            visible = [k for k in range(gt.shape[0]) if int((gt[k, ref] > 0.5).sum()) > MIN_OBJECT_PIXELS]
            visible = visible[:MAX_OBJECTS]
            if not visible:
                continue
            if prop_range is None:
                left, right = 0, total_t - 1
            else:
                left, right = max(0, ref - prop_range), min(total_t - 1, ref + prop_range)
            ref_dir = out_dir / f"{ref:05d}"
            for f, prob in generator.propagate(gt[visible, ref], ref, left, right):
                # truncation (not rounding), as the original's astype(uint8)
                prob_u8 = (prob[1:] * 255).cpu().numpy().astype(np.uint8)
                for j, k in enumerate(visible):
                    save_probability_png(ref_dir / f"{labels[k]:05d}" / f"{f:05d}.png", prob_u8[j])
            passes += 1
    return passes


def generate(args: argparse.Namespace) -> int:
    """Run the generation (this process's share of the videos under torchrun, see :mod:`util.batch`);
    return the exit code (1 when a video failed)."""
    from dataset.bl_test_dataset import BLTestDataset
    from dataset.davis_test_dataset import DAVISTestDataset
    from util.batch import init_batch, shutdown_batch

    if args.dataset == "DAVIS":
        dataset = DAVISTestDataset(Path(args.davis_root).expanduser() / "trainval", imset="2017/train.txt")
    else:
        dataset = BLTestDataset(args.bl_root, start=args.start, end=args.end)
    ctx = init_batch(args.device)
    try:
        return _generate_videos(args, ctx, dataset)
    finally:
        shutdown_batch(ctx)


def _generate_videos(args: argparse.Namespace, ctx, dataset) -> int:
    from model.factory import load_propagation
    from util.batch import WorkItem, dataset_loader, file_identity, report_failures, run_batch, summary_line

    device = ctx.device
    prop_net = load_propagation(args.model, device)
    out_root = Path(args.output)
    out_root.mkdir(parents=True, exist_ok=True)
    settings = {"job": "generate_fusion", "model": file_identity(args.model), "dataset": args.dataset,
                "root": str(Path(args.davis_root if args.dataset == "DAVIS" else args.bl_root).expanduser().resolve()),
                "separation": args.separation, "mem_freq": args.mem_freq,
                "range": args.range if args.dataset == "BL" else None}
    items = [WorkItem(name, dataset.num_frames[name], index) for index, name in enumerate(dataset.videos)]

    def process(item: WorkItem, data: dict) -> dict:
        name = data["info"]["name"]
        labels = [int(x) for x in data["info"]["labels"]]
        remove_partial_writes(out_root / name)   # left by a run killed while it wrote this video
        passes = write_video_passes(prop_net, data["rgb"].to(device), data["gt"].to(device), labels,
                                    out_root / name, args.separation, args.mem_freq,
                                    args.range if args.dataset == "BL" else None)
        return {"passes": passes, "references": len(range(0, data["rgb"].shape[0], args.separation))}

    start = time.time()
    outcome = run_batch(ctx, items, process, out_root, settings, load=dataset_loader(dataset))
    if ctx.is_main:
        passes = sum(r["passes"] for r in outcome.results.values())
        print(f"{passes} reference passes written to {out_root}")
        report_failures(outcome)
        print(summary_line(outcome, elapsed_s=time.time() - start), file=sys.stderr)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run(args: argparse.Namespace) -> int:
        _check_args(args)
        return generate(args)

    return cli.run_cli(run, args, ("util.checkpoint:CheckpointError", "dataset.layout:DatasetError",
                                   "util.batch:BatchError"))


if __name__ == "__main__":
    sys.exit(main())
