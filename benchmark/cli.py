"""FasterMiVOS benchmark: the interactive workload, timed per precision mode and checked against float32.

Workload (deterministic; formula weights with ``--reference``, else a seeded init):

* a synthetic clip of ``--frames`` 24 frames at ``--size`` 854×480 (padded to 864×480) with ``--objects`` 2
  moving textured objects (``dataset.synthetic.make_clip``), given to ``InferenceCore`` as uint8 frames;
* round 1: ``interact`` at the middle frame (12) with the ground-truth one-hot mask → propagates 23 frames;
* round 2: ``interact`` at frame 0 with the ground truth spoiled by a few wrong discs → propagates the 11
  frames up to frame 12 with difference-aware fusion;
* one S2M scribble interaction (every object + background strokes) and three f-BRS clicks (2 positive,
  1 negative) on single frames.

Every run of every precision mode is its own subprocess (so peak RSS is per mode and run), and the modes
take turns (run 1 of every mode, then run 2, ...) so that a slow spell of a shared machine falls on all of
them; numbers are medians of ``--runs``.
Other modes are compared pixel by pixel with the exact float32 path (masks after each round, S2M labels,
f-BRS masks). ``--long-clip`` instead measures memory on a lazily generated 1000-frame clip.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import BenchmarkError
from benchmark.modes import MODES, available_modes
from benchmark.report import (BASELINE, SCHEMA, TARGETS, agreement_keys, flops_ratios, median_metrics,
                              print_long_table, print_table, speedups)
from benchmark.runner import log, run_worker, worker_main
from benchmark.weights import write_weights
from benchmark.workload import agreement
from util.cli import CliError, output_file, run_cli
from util.fileio import atomic_write_text
from util.precision import resolve_device

USAGE = """examples:
    python benchmark.py                                   # the workload, fp32 + bf16 where the CPU has it natively
    python benchmark.py --device cuda --precision fp32,fp16,orig
    python benchmark.py --long-clip --out long.json
    python benchmark.py --tiny --out /tmp/tiny.json       # CI configuration (correctness, not speed)

--weights DIR keeps the generated checkpoints for later runs. On a machine shared with other jobs,
--threads 1 gives steadier numbers: two OpenMP threads on a busy 2-core machine mostly wait for
each other (measured 10x slower than one thread under a load of 12)."""


def _default_reference() -> Path | None:
    env = os.environ.get("MIVOS_REFERENCE")
    return Path(env) if env else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0],
                                epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default=None,
                   help="comma-separated modes among fp32,bf16,fp16,orig (orig = float32 through the original's "
                   "compute path, a same-machine baseline) (default: fp32,bf16 on CPU, fp32,fp16 on "
                        "CUDA); fp32 always runs, it is the reference of the agreements (--long-clip: only the modes given)")
    p.add_argument("--force-precision", action="store_true",
                   help="run modes the device has no native support for (e.g. emulated bf16): for correctness")
    p.add_argument("--runs", type=int, default=3, help="runs per mode; numbers are medians (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as the baseline)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--frames", type=int, default=None, help="clip length (default 24; 1000 with --long-clip)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="frame size (default 854 480)")
    p.add_argument("--objects", type=int, default=None, help="objects (default 2; 3 with --long-clip)")
    p.add_argument("--mem-freq", type=int, default=5)
    p.add_argument("--clicks", type=int, default=None, choices=(1, 2, 3),
                   help="f-BRS clicks (default 3: positive, positive, negative; 1 with --tiny, as clicks 2-3 "
                        "zoom in to 480 px whatever the frame size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", type=Path, default=_default_reference(),
                   help="folder with formula_weights.py, the deterministic weights the faithfulness fixtures "
                        "use (default: $MIVOS_REFERENCE); without it a seeded random init is used, with a note")
    p.add_argument("--weights", type=Path, default=None,
                   help="folder to keep the generated checkpoints in and reuse on later runs (default: a "
                        "temporary folder; generating formula weights takes ~20 s)")
    p.add_argument("--out", type=Path, default=Path("benchmark_results.json"), help="JSON results file")
    p.add_argument("--tiny", action="store_true",
                   help="CI configuration: 6 frames 160×128, 1 run (long clip: 40 frames, window 3)")
    p.add_argument("--long-clip", action="store_true",
                   help="memory on a lazily generated long clip (1000 frames 480p, 3 objects) instead")
    p.add_argument("--window", type=int, default=None,
                   help="--long-clip: frames to propagate from the annotated frame (default 12)")
    p.add_argument("--prob-storage", default="uint16", choices=("uint16", "float32"),
                   help="--long-clip: InferenceCore prob_storage (default uint16)")
    p.add_argument("--feature-cache-mb", type=float, default=256,
                   help="--long-clip: InferenceCore feature_cache_bytes in MiB (default 256)")
    p.add_argument("--mem-profile", type=int, default=0, choices=(0, 1, 2, 3), help="--long-clip: mem_profile")
    p.add_argument("--prob-spill", action="store_true",
                   help="--long-clip: keep only --prob-ram-mb of probabilities in memory, the rest in a file "
                        "in the benchmark's work folder (as the GUI does in its workspace; numbers unchanged)")
    p.add_argument("--prob-ram-mb", type=float, default=256,
                   help="--long-clip --prob-spill: in-memory probability budget in MiB (default 256)")
    p.add_argument("--memory-ram-mb", type=float, default=256,
                   help="--long-clip --prob-spill: in-memory budget of the memory bank's values in MiB; the "
                        "frames committed beyond it go to the same spill folder and the top-k readout reads "
                        "back only the rows it selects (default 256; -1 keeps the whole bank in memory)")
    p.add_argument("--flops", action="store_true",
                   help="also count each step's floating-point operations (convolutions, matrix products) in "
                        "one more, untimed run per mode: the arithmetic each mode does, next to its time")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return args
    if args.reference is not None and not args.reference.is_dir():
        raise BenchmarkError(f"--reference {args.reference}: not a folder; pass the folder holding "
                             f"formula_weights.py, or leave it out for seeded random weights")
    if args.long_clip and args.flops:
        raise BenchmarkError("--flops: counts the arithmetic of the interactive workload; leave it out with "
                             "--long-clip")
    if args.long_clip:
        frames, size, objects, window, runs = 1000, [854, 480], 3, 12, 1
        if args.tiny:
            frames, size, window = 40, [160, 128], 3
    else:
        frames, size, objects, window, runs = 24, [854, 480], 2, None, args.runs
        if args.tiny:
            frames, size, runs = 6, [160, 128], 1
    args.frames = args.frames if args.frames is not None else frames
    args.size = args.size if args.size is not None else size
    args.objects = args.objects if args.objects is not None else objects
    args.window = args.window if args.window is not None else window
    args.clicks = args.clicks if args.clicks is not None else (1 if args.tiny else 3)
    if args.tiny and "--runs" not in (argv if argv is not None else sys.argv[1:]):
        args.runs = runs
    for name, value, low in (("--runs", args.runs, 1), ("--threads", args.threads, 1), ("--frames", args.frames, 2),
                             ("--objects", args.objects, 1), ("--mem-freq", args.mem_freq, 1),
                             ("--size W", args.size[0], 16), ("--size H", args.size[1], 16)):
        if value < low:
            raise BenchmarkError(f"{name} {value}: must be at least {low}")
    # checked before any work: a bad results path must not surface after minutes of timing
    try:
        args.out = output_file("--out", args.out, inputs={"--reference": args.reference})
    except CliError as e:
        raise BenchmarkError(str(e)) from None
    if args.memory_ram_mb < 0 and args.memory_ram_mb != -1:
        raise BenchmarkError(f"--memory-ram-mb {args.memory_ram_mb}: must be at least 0, or -1 (no spill)")
    try:
        args.device = resolve_device(args.device)
    except ValueError as e:
        raise BenchmarkError(f"--device {args.device}: {e}") from None
    if args.precision is None:
        args.precision = "fp32,fp16" if args.device.type == "cuda" else "fp32,bf16"
    modes = [m.strip().lower() for m in args.precision.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise BenchmarkError(f"--precision {args.precision}: unknown mode(s) {', '.join(bad)}; use a "
                             f"comma-separated list of {', '.join(MODES)}")
    # fp32 is the reference of the workload's agreements; the long clip compares nothing, so it runs
    # exactly the modes asked for (a full pass in one mode can take an hour)
    args.modes = (list(dict.fromkeys(modes)) if args.long_clip
                  else ["fp32"] + [m for m in dict.fromkeys(modes) if m != "fp32"])
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args._worker:
        cfg = json.loads(args._worker.read_text())
        result = worker_main(cfg)
        args._result.write_text(json.dumps(result))
        return 0
    return run_cli(run_benchmark, args, (BenchmarkError,), code=1)


def run_benchmark(args: argparse.Namespace) -> int:
    modes, skipped, notes = available_modes(args.modes, args.device, args.force_precision)
    notes.append("timings depend on the machine and its load; compare numbers only from the same machine "
                 "(the baseline is the reference CI machine)")
    load1 = os.getloadavg()[0]
    if load1 > (os.cpu_count() or 1):
        notes.append(f"the machine is busy (load average {load1:.1f} on {os.cpu_count()} CPUs): timings are "
                     f"inflated, more so with several threads (OpenMP threads wait for each other)")
    config = {"frames": args.frames, "width": args.size[0], "height": args.size[1], "objects": args.objects,
              "mem_freq": args.mem_freq, "clicks": args.clicks, "runs": args.runs, "threads": args.threads,
              "device": str(args.device),
              "precision_requested": args.modes, "seed": args.seed, "tiny": args.tiny, "long_clip": args.long_clip,
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    if args.device.type == "cuda":
        config["gpu"] = torch.cuda.get_device_name(args.device)
    work = Path(tempfile.mkdtemp(prefix="mivos_bench_"))
    weights = work
    if args.weights is not None:
        weights = args.weights
        try:
            weights.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BenchmarkError(f"--weights {weights}: cannot create the folder ({e.strerror})")
    try:
        log(f"weights in {weights} ...", args.quiet)
        config["weights"], weights_note = write_weights(args.reference, weights, args.seed)
        notes.append(weights_note)
        base_cfg = {"device": str(args.device), "threads": args.threads, "frames": args.frames, "width": args.size[0],
                    "height": args.size[1], "objects": args.objects, "mem_freq": args.mem_freq, "seed": args.seed,
                    "clicks": args.clicks, "runs": args.runs, "weights": str(weights), "quiet": args.quiet,
                    "long_clip": args.long_clip}
        if args.long_clip:
            result = run_long_clip(args, base_cfg, modes, work, config, skipped, notes)
        else:
            result = run_clip(args, base_cfg, modes, work, config, skipped, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    (print_long_table if args.long_clip else print_table)(result)
    print(f"results written to {args.out}")
    return 0


def add_run(first: dict[str, Any], first_masks: dict[str, np.ndarray], later: dict[str, Any],
            later_masks: dict[str, np.ndarray], keys: tuple[str, ...]) -> None:
    """Fold a later one-run worker result of a mode into its first one (in place): its timings are
    appended, peaks are the largest, and run-to-run agreement is the lowest agreement of any run's masks
    with the first run's."""
    first["runs"] = first["runs"] + later["runs"]
    first["peak_rss_bytes"] = max(first["peak_rss_bytes"], later["peak_rss_bytes"])
    if later.get("gpu_peak_allocated_bytes") is not None:
        first["gpu_peak_allocated_bytes"] = max(first.get("gpu_peak_allocated_bytes") or 0,
                                                later["gpu_peak_allocated_bytes"])
    for key in keys:
        first["run_to_run_agreement"][key] = min(first["run_to_run_agreement"][key],
                                                 agreement(first_masks[key], later_masks[key]))


def run_clip(args, base_cfg, modes, work, config, skipped, notes) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    masks: dict[str, dict[str, np.ndarray]] = {}
    keys = agreement_keys(args.clicks)
    for run in range(args.runs):
        for mode in modes:
            log(f"== mode {mode}, run {run + 1}/{args.runs}: a fresh process ==", args.quiet)
            cfg = dict(base_cfg, mode=mode, runs=1, flops=args.flops and run == 0,
                       masks_out=str(work / f"{mode}_run{run}_masks.npz"))
            r = run_worker(cfg, work)
            with np.load(cfg["masks_out"]) as z:
                run_masks = {key: z[key] for key in z.files}
            if mode not in results:
                results[mode], masks[mode] = r, run_masks
            else:
                add_run(results[mode], masks[mode], r, run_masks, keys)
    comparable = all(config[key] == BASELINE["workload"][key] for key in BASELINE["workload"])
    if not comparable:
        notes.append("the workload differs from the baseline's (24 frames 854×480, 2 objects, mem_freq 5): "
                     "no speed-up factors")
    elif args.device.type != "cpu" or args.threads != 2:
        notes.append("speed-ups compare this device/thread count with the original on the 2-core reference CPU")
    out_modes = {}
    for mode in modes:
        r = results[mode]
        med = median_metrics(r["runs"])
        out_modes[mode] = {
            "precision_via": r["precision_via"], "allocator": r.get("allocator"), "runs": r["runs"], "median": med,
            "peak_rss_bytes": r["peak_rss_bytes"],
            "flops": r.get("flops"),
            "speedup_vs_baseline": speedups(med, comparable),
            "agreement_with_fp32": {key: agreement(masks["fp32"][key], masks[mode][key])
                                    for key in agreement_keys(args.clicks)},
            "run_to_run_agreement": r["run_to_run_agreement"],
            "targets": TARGETS["fp32" if mode == "fp32" else "fast"],
        }
    if args.flops and "orig" in out_modes:
        for mode, r in out_modes.items():
            # how much more arithmetic the original's compute path does than this mode: the speed-up a
            # mode reaches at the same operations per second as the original path
            r["flops_ratio_vs_orig"] = flops_ratios(out_modes["orig"]["flops"], r["flops"])
    return {"schema": SCHEMA, "config": config, "workload": results["fp32"]["workload"], "baseline": BASELINE,
            "modes": out_modes, "skipped": skipped, "notes": notes}


def run_long_clip(args, base_cfg, modes, work, config, skipped, notes) -> dict[str, Any]:
    out = {}
    annotated = 0
    for mode in modes:
        log(f"== long clip, mode {mode} ==", args.quiet)
        cfg = dict(base_cfg, mode=mode, window=args.window, annotated_frame=annotated,
                   prob_storage=args.prob_storage, feature_cache_mb=args.feature_cache_mb,
                   mem_profile=args.mem_profile, prob_ram_mb=args.prob_ram_mb,
                   prob_spill_dir=str(work / f"spill_{mode}") if args.prob_spill else None,
                   memory_ram_mb=args.memory_ram_mb if args.prob_spill and args.memory_ram_mb >= 0 else None)
        out[mode] = run_worker(cfg, work)
    notes.append("frames are generated per index (ProceduralClip), never held as a T×H×W×3 array; the pass is "
                 "stopped after --window frames (interact_iter), the projection adds what a full pass would "
                 "still keep in memory: probabilities (up to their RAM budget), hard masks, memory-bank keys, "
                 "memory-bank values (up to their RAM budget) and the growth of the top-k readout's transient")
    config.update({"window": args.window, "prob_storage": args.prob_storage,
                   "feature_cache_mb": args.feature_cache_mb, "mem_profile": args.mem_profile,
                   "prob_spill": args.prob_spill, "prob_ram_mb": args.prob_ram_mb,
                   "memory_ram_mb": args.memory_ram_mb if args.prob_spill else -1})
    return {"schema": SCHEMA, "config": config, "long_clip": out, "skipped": skipped, "notes": notes}
