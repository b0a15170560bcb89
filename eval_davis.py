"""Semi-supervised DAVIS evaluation of the propagation network (Mask-Propagation ``eval_davis.py`` and
``eval_davis_2016.py``).

Each video is propagated from its frame-0 ground truth (no fusion, no interaction) with the top-k memory
read, and the masks are written as ``<output>/<video>/%05d.png``:

* DAVIS 2017 (``--split val`` / ``testdev``): palette PNGs (DAVIS palette), object ids of the annotation;
  probabilities bilinearly upsampled to the 480p annotation size before the argmax (as the original).
* DAVIS 2016 (``--davis16``, or ``eval_davis_2016.py``): one object (annotation > 0), 0/255 greyscale
  PNGs, argmax at the processing size (as the original).

When the ground truth of every frame is available (val) the J&F is computed with ``util/metrics.py``
(official semi-supervised protocol: first and last frame excluded, J&F = (mean J + mean F) / 2 over all
objects) and written to ``<output>/global_results-<split>.csv``, ``per-sequence_results-<split>.csv`` and
``scores.json``. ``--score_only`` scores an existing output folder without running the network.

Runs as one process or under ``torchrun`` (videos shared among the processes, rank 0 writes the
summary); finished videos are recorded in ``<output>/.done`` and skipped when the same command runs again
(:mod:`util.batch`).

Examples::

    python eval_davis.py --output results/d17_val                   # ../DAVIS/2017/trainval, 2017/val.txt
    python eval_davis.py --split testdev --output results/d17_td
    python eval_davis.py --davis16 --davis ../DAVIS/2016 --output results/d16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from util import cli
from util.fileio import atomic_write_text, remove_partial_writes
from util.metrics import SequenceScores, evaluate_sequence
from util.palette import load_mask_png, save_mask_png

DEFAULT_MODEL = "saves/propagation_model.pth"
KM_SIGMA = 5.6
# the 2016 image set lives in the 2017 release (ImageSets/2016/val.txt), as the original uses it
DAVIS16_IMSET = "../../2017/trainval/ImageSets/2016/val.txt"

if TYPE_CHECKING:   # torch is imported where it is used, so bad arguments are refused in a fraction of a second
    import torch


class EvalError(ValueError):
    """Bad arguments or data for an evaluation script (one-line message)."""


@dataclass
class EvalSet:
    root: Path          # the folder holding JPEGImages/480p, Annotations/480p, ImageSets
    imset: str          # relative to root/ImageSets
    split: str          # name used in the result file names
    single_object: bool


def resolve_set(davis: str | os.PathLike, split: str, davis16: bool, imset: str | None = None) -> EvalSet:
    """Where the frames and the image list are.

    2017: ``<davis>/trainval`` (val) or ``<davis>/test-dev`` (testdev), or ``<davis>`` itself when it
    already holds ``ImageSets`` (a single-root layout such as the synthetic generator's).
    2016: ``<davis>`` with the original's image set ``../../2017/trainval/ImageSets/2016/val.txt``,
    falling back to ``<davis>/ImageSets/2016/val.txt``."""
    davis = Path(davis).expanduser()
    if davis16:
        if imset is None:
            imset = DAVIS16_IMSET if (davis / "ImageSets" / DAVIS16_IMSET).is_file() else "2016/val.txt"
        return EvalSet(davis, imset, "2016-val", True)
    if split not in ("val", "testdev"):
        raise cli.CliError("--split", split, "unknown split", "use val or testdev")
    sub, default_imset = ("trainval", "2017/val.txt") if split == "val" else ("test-dev", "2017/test-dev.txt")
    root = davis / sub if (davis / sub).is_dir() else davis
    return EvalSet(root, imset or default_imset, split, False)


# ------------------------------------------------------------------------------------------------ scoring
def read_label_folder(folder: Path, num_frames: int, single_object: bool) -> np.ndarray | None:
    """``T×H×W`` uint8 labels of ``folder/%05d.png`` (``> 0`` → 1 for one object); None if any is missing."""
    frames = []
    for t in range(num_frames):
        path = folder / f"{t:05d}.png"
        if not path.is_file():
            return None
        frames.append(load_mask_png(path))
    labels = np.stack(frames)
    return (labels > 0).astype(np.uint8) if single_object else labels


def score_video(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> SequenceScores:
    """Semi-supervised DAVIS scores of one video (first and last frame excluded when T ≥ 3)."""
    if pred.shape != gt.shape:
        raise EvalError(f"prediction is {pred.shape[2]}×{pred.shape[1]} ×{pred.shape[0]} frames but the ground "
                        f"truth is {gt.shape[2]}×{gt.shape[1]} ×{gt.shape[0]} frames")
    return evaluate_sequence(gt, pred, num_objects=num_objects, skip_first_last=gt.shape[0] >= 3)


def summarise(scores: dict[str, SequenceScores]) -> dict:
    """Official global numbers: every statistic is a mean over all objects of all videos."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(s, name) for s in scores.values()])

    j, f = cat("J_mean"), cat("F_mean")
    return {"J&F-Mean": float((j.mean() + f.mean()) / 2), "J-Mean": float(j.mean()),
            "J-Recall": float(cat("J_recall").mean()), "J-Decay": float(cat("J_decay").mean()),
            "F-Mean": float(f.mean()), "F-Recall": float(cat("F_recall").mean()),
            "F-Decay": float(cat("F_decay").mean()), "sequences": len(scores), "objects": int(len(j))}


def write_summary(out_dir: Path, split: str, scores: dict[str, SequenceScores], extra: dict | None = None) -> dict:
    """Write ``global_results-<split>.csv``, ``per-sequence_results-<split>.csv`` (the official
    evaluator's files) and ``scores.json``; returns the global summary."""
    summary = summarise(scores)
    cols = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    atomic_write_text(out_dir / f"global_results-{split}.csv",
                      ",".join(cols) + "\n" + ",".join(f"{summary[c]:.6f}" for c in cols) + "\n")
    rows = ["Sequence,J-Mean,F-Mean"]
    for name, s in scores.items():
        rows += [f"{name}_{k + 1},{s.J_mean[k]:.6f},{s.F_mean[k]:.6f}" for k in range(len(s.J_mean))]
    atomic_write_text(out_dir / f"per-sequence_results-{split}.csv", "\n".join(rows) + "\n")
    doc = {"split": split, "global": summary, **(extra or {}),
           "sequences": {name: s.as_dict() for name, s in scores.items()}}
    atomic_write_text(out_dir / "scores.json", json.dumps(doc, indent=2) + "\n")
    return summary


def score_folder(results: str | os.PathLike, annotations: str | os.PathLike, videos: Sequence[str],
                 single_object: bool = False) -> dict[str, SequenceScores]:
    """Score ``results/<video>/%05d.png`` against ``annotations/<video>/%05d.png`` (every frame needed).
    Objects = the ids of the ground truth's frame 0 (one object for ``single_object``)."""
    results, annotations = Path(results), Path(annotations)
    scores = {}
    for video in videos:
        n = len(list((annotations / video).glob("*.png")))
        gt = read_label_folder(annotations / video, n, single_object) if n else None
        if gt is None:
            raise EvalError(f"{annotations / video}: ground truth missing for some frames; J&F needs every frame")
        pred = read_label_folder(results / video, n, single_object)
        if pred is None:
            raise EvalError(f"{results / video}: {n} masks %05d.png expected; run the evaluation first")
        ids = [1] if single_object else [int(i) for i in np.unique(gt[0]) if i != 0]
        if ids and ids != list(range(1, len(ids) + 1)):
            # non-consecutive ids: evaluate them as 1..K on both sides
            lut = np.zeros(256, np.uint8)
            lut[ids] = np.arange(1, len(ids) + 1)
            gt, pred = lut[gt], lut[pred]
        scores[video] = score_video(gt, pred, max(len(ids), 1))
    return scores


def print_summary(summary: dict) -> None:
    print(f"J&F-Mean {summary['J&F-Mean']:.4f}  J-Mean {summary['J-Mean']:.4f}  F-Mean {summary['F-Mean']:.4f}  "
          f"({summary['sequences']} sequences, {summary['objects']} objects)")


# ------------------------------------------------------------------------------------------------ running
def build_parser(davis16: bool = False) -> argparse.ArgumentParser:
    p = cli.CliParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="propagation checkpoint (propagation_model.pth)")
    p.add_argument("--davis", default="../DAVIS/2016" if davis16 else "../DAVIS/2017",
                   help="DAVIS root (2017: holds trainval/ and test-dev/; 2016: the 2016 release)")
    p.add_argument("--output", required=True, help="output folder: <output>/<video>/%%05d.png")
    p.add_argument("--split", default="val", help="val or testdev (DAVIS 2017)")
    p.add_argument("--davis16", action="store_true", default=davis16,
                   help="DAVIS 2016: single object, 0/255 PNGs (as eval_davis_2016.py)")
    p.add_argument("--imset", default=None, help="image-set file relative to <root>/ImageSets (default: the original's)")
    p.add_argument("--top_k", type=int, default=50, help="memory entries read per query position (default 50)")
    p.add_argument("--no_top", action="store_true", help="plain softmax over all memory (no top-k)")
    p.add_argument("--use_km", action="store_true", help=f"kernelised memory read (σ = {KM_SIGMA})")
    p.add_argument("--mem_freq", type=int, default=5, help="commit a frame to memory every N frames (default 5)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="network precision (float32 = the original's numbers; float16 needs CUDA)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading processes (0: load in the main process)")
    p.add_argument("--video", action="append", default=None, help="evaluate only this video (repeatable)")
    p.add_argument("--score_only", action="store_true", help="score an existing --output folder, run nothing")
    return p


def _sync(device: torch.device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_network(model: str, top_k: int | None, use_km: bool, device: torch.device) -> torch.nn.Module:
    """The propagation network (top-k or plain read; kernelised memory with ``use_km``)."""
    from model.factory import load_propagation
    net = load_propagation(model, device, top_k=top_k)
    if use_km:
        from model.propagation.kernel_memory import use_kernelised_memory
        use_kernelised_memory(net, KM_SIGMA)
    return net


def check_frame_names(image_dir: Path, mask_dir: Path, videos: Sequence[str], davis: str) -> None:
    """Every video's frames must be ``00000.jpg, 00001.jpg, …`` without a gap: frame ``t`` is scored
    against annotation ``%05d.png`` of ``t`` and its mask written under that name, so a missing JPEG
    would shift every later frame. Raises :class:`CliError` naming the first missing frame."""
    for video in videos:
        stems = sorted(p.stem for p in (image_dir / video).glob("*.jpg"))
        for t, stem in enumerate(stems):
            if stem != f"{t:05d}":
                missing = f"{t:05d}.jpg"
                raise cli.CliError(
                    "--davis", davis, f"frame {missing} of video {video} is missing ({image_dir / video} has "
                    f"{stem}.jpg next); frames must be numbered 00000.jpg, 00001.jpg, ... to match "
                    f"{mask_dir.parent.name}/{mask_dir.name}/{video}/%05d.png",
                    f"restore the frame, or leave the video out (--video NAME for the others)")
        if not stems:
            raise cli.CliError("--davis", davis, f"video {video} has no .jpg frames in {image_dir / video}",
                               "restore its frames or leave it out of the image set")
        extra = sorted(p.stem for p in (mask_dir / video).glob("*.png") if p.stem not in set(stems))
        if extra:
            raise cli.CliError("--davis", davis, f"annotation {mask_dir / video / (extra[0] + '.png')} has no "
                               f"frame {extra[0]}.jpg", "restore the frame or remove the stray annotation")


def validate_args(args: argparse.Namespace) -> None:
    """Argument checks that need no network (run first, in a fraction of a second)."""
    cli.positive_int("--mem_freq", args.mem_freq)
    if not args.no_top:
        cli.positive_int("--top_k", args.top_k)
    cli.non_negative_int("--num_workers", args.num_workers)
    cli.input_dir("--davis", args.davis, "DAVIS root", "pass the DAVIS root with --davis")
    if args.score_only:
        cli.input_dir("--output", args.output, "results folder", "run the evaluation first (without --score_only)")
        return
    cli.input_file("--model", args.model, "checkpoint", "download it with python download_model.py or pass --model PATH")
    if args.device is not None:
        cli.device("--device", args.device)   # (needs torch: only when a device is named)
    cli.output_dir("--output", args.output, {"--davis": args.davis})


def run(args: argparse.Namespace) -> int:
    eval_set = resolve_set(args.davis, args.split, args.davis16, args.imset)
    if args.imset is not None and Path(args.davis).is_dir():
        cli.input_file("--imset", eval_set.root / "ImageSets" / args.imset, "image-set list",
                       f"give a list relative to {eval_set.root / 'ImageSets'}")
    validate_args(args)
    from dataset.davis_test_dataset import DAVISTestDataset

    out_dir = Path(args.output)

    dataset = DAVISTestDataset(eval_set.root, imset=eval_set.imset, single_object=eval_set.single_object)
    if args.video:
        missing = sorted(set(args.video) - set(dataset.videos))
        if missing:
            raise cli.CliError("--video", missing[0], f"not in {eval_set.root / 'ImageSets' / eval_set.imset}",
                               "give a video of the image set")
        dataset.videos = [v for v in dataset.videos if v in args.video]
    annotations = eval_set.root / "Annotations" / "480p"

    if args.score_only:
        scores = score_folder(out_dir, annotations, dataset.videos, eval_set.single_object)
        print_summary(write_summary(out_dir, eval_set.split, scores))
        return 0

    check_frame_names(dataset.image_dir, dataset.mask_dir, dataset.videos, args.davis)
    from util.batch import init_batch, shutdown_batch
    ctx = init_batch(args.device)
    try:
        return _run_videos(args, ctx, dataset, eval_set, out_dir, annotations)
    finally:
        shutdown_batch(ctx)


def _run_videos(args: argparse.Namespace, ctx, dataset, eval_set: EvalSet, out_dir: Path, annotations: Path) -> int:
    """Propagate and score this rank's share of the videos (see :mod:`util.batch`); rank 0 merges the
    scores of all videos, in the image set's order, into the summary files."""
    import torch

    from inference_core.core import InferenceCore
    from inference_core.semisup import frame_labels, propagate_first_frame
    from util.batch import (WorkItem, dataset_loader, file_identity, report_failures, run_batch,
                            summary_line)

    device = ctx.device
    top_k = None if args.no_top else args.top_k
    net = load_network(args.model, top_k, args.use_km, device)
    settings = {"job": "eval_davis", "model": file_identity(args.model), "root": str(eval_set.root.resolve()),
                "imset": eval_set.imset, "single_object": eval_set.single_object, "top_k": top_k,
                "use_km": args.use_km, "mem_freq": args.mem_freq, "precision": args.precision}
    items = [WorkItem(name, dataset.num_frames[name], index) for index, name in enumerate(dataset.videos)]

    def process(item: WorkItem, data: dict) -> dict:
        info = data["info"]
        name, labels = info["name"], [int(v) for v in info["labels"]]
        gt_onehot = data["gt"][:, 0]                                  # K×1×H×W, frame 0
        num_frames = data["rgb"].shape[0]
        if not labels:
            print(f"{name}: no object in frame 0, skipped")
            return {"skipped": "no object in frame 0"}
        _sync(device)
        start = time.time()
        core = InferenceCore(net, None, data["rgb"].unsqueeze(0), len(labels), mem_freq=args.mem_freq,
                             device=device, precision=args.precision)
        with torch.inference_mode():
            for _ in propagate_first_frame(core, gt_onehot):
                pass
            if eval_set.single_object:
                masks = np.stack([frame_labels(core.get_prob(t), core.pad) for t in range(num_frames)])
            else:
                size = tuple(int(s) for s in info["size_480p"])
                masks = np.stack([frame_labels(core.get_prob(t), core.pad, size, labels) for t in range(num_frames)])
        _sync(device)
        elapsed = time.time() - start
        del core

        video_dir = out_dir / name
        remove_partial_writes(video_dir)   # left by a run killed while it wrote this video
        for t, mask in enumerate(masks):
            if eval_set.single_object:
                save_mask_png_grey(video_dir / f"{t:05d}.png", mask)
            else:
                save_mask_png(video_dir / f"{t:05d}.png", mask)
        result = {"frames": num_frames, "time_s": elapsed}
        gt = read_label_folder(annotations / name, num_frames, eval_set.single_object)
        if gt is None or gt.shape != masks.shape:
            return {**result, "unscored": True}
        pred = (masks > 0).astype(np.uint8) if eval_set.single_object else masks
        if not eval_set.single_object and labels != list(range(1, len(labels) + 1)):
            lut = np.zeros(256, np.uint8)
            lut[labels] = np.arange(1, len(labels) + 1)
            gt, pred = lut[gt], lut[pred]
        s = score_video(gt, pred, len(labels))
        # J and F (T×K float64) survive the JSON record exactly: the merged summary is the same numbers
        return {**result, "J": s.J.tolist(), "F": s.F.tolist()}

    run_start = time.time()
    outcome = run_batch(ctx, items, process, out_dir, settings, load=dataset_loader(dataset),
                        num_workers=args.num_workers)
    if not ctx.is_main:
        return outcome.exit_code
    results = outcome.results
    scores: dict[str, SequenceScores] = {}
    unscored: list[str] = []
    total_time, total_frames = 0.0, 0
    for name in dataset.videos:
        r = results.get(name)
        if r is None or "skipped" in r:
            continue
        total_time += r["time_s"]
        total_frames += r["frames"]
        if r.get("unscored"):
            unscored.append(name)
        else:
            scores[name] = SequenceScores(J=np.asarray(r["J"], np.float64), F=np.asarray(r["F"], np.float64))

    fps = total_frames / total_time if total_time > 0 else float("nan")
    print(f"Total processing time: {total_time:.2f} s, processed frames: {total_frames}, FPS: {fps:.2f}")
    timing = {"processing_time_s": total_time, "frames": total_frames, "fps": fps, "device": str(device),
              "processes": ctx.world_size}
    failed = outcome.failed
    if scores and not unscored and not failed:
        print_summary(write_summary(out_dir, eval_set.split, scores, {"timing": timing}))
    elif scores and failed:
        print(f"J&F not computed: {len(failed)} video(s) failed")
    elif scores:
        print(f"J&F not computed: no complete ground truth for {len(unscored)} video(s), e.g. {unscored[0]}")
    atomic_write_text(out_dir / "timing.json", json.dumps(timing, indent=2) + "\n")
    report_failures(outcome)
    print(summary_line(outcome, elapsed_s=time.time() - run_start), file=sys.stderr)
    return outcome.exit_code


def save_mask_png_grey(path: Path, mask01: np.ndarray) -> None:
    """DAVIS 2016 output: a greyscale PNG, 0 background and 255 object (no palette, as the original)."""
    from PIL import Image
    from util.fileio import atomic_path
    with atomic_path(path) as tmp:
        Image.fromarray((mask01 > 0).astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")


def main(argv: Sequence[str] | None = None, davis16: bool = False) -> int:
    args = build_parser(davis16).parse_args(argv)
    # CliError, EvalError, dataset layout errors, a frame too small for the top-k read, ...
    return cli.run_cli(run, args, (ValueError, "dataset.layout:DatasetError", "util.checkpoint:CheckpointError"))


if __name__ == "__main__":
    sys.exit(main())
