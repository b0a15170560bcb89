#!/usr/bin/env python
"""DAVIS interactive-track evaluation with the official ``davisinteractive`` 1.0.4 session, robot and metrics.

The package runs unmodified (``util.davis_compat`` is imported first and only restores what the modern numpy /
networkx / pandas / scikit-image stack removed, and makes the robot deterministic). Per sample (a sequence with
one set of initial scribbles) the robot gives up to ``--max_interactions`` scribbles; each goes through
:class:`inference_core.davis_processor.DAVISProcessor` (S2M, then propagation + fusion on interactions 3, 6, 8).

Any DAVIS-layout root works: the official ``DAVIS/2017`` folder (with ``trainval/`` inside) or a root that has
``JPEGImages/480p``, ``Annotations/480p``, ``Scribbles`` directly (e.g. one made by
``scripts/make_synthetic_davis.py``). Sequences the package does not know are registered from disk (frame count,
objects in frame 0, image size, scribble files); nothing is ever downloaded.

Outputs in ``--output``:
  summary.json            the package's global summary (AUC, J&F@60s, curve)
  report.csv              the per-interaction report (one row per sample, interaction, object and frame)
  result_<time>.csv       the same report as the package saves it
  jf_vs_time.png          J&F against time, with the AUC and the 60 s mark
  run_info.json           settings, sequences, and the model time of every interaction
  masks/<k>/<seq>/%05d.png  with --save_mask: every sample's final masks (k = scribble index - 1)

Timing is the package's: wall time between ``get_scribbles`` and ``submit_masks`` (building the per-sample
processor included, as in the original). Frames are read before ``get_scribbles`` (the original pre-loaded every
sequence), as uint8, one sequence at a time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from util import cli
from util.fileio import atomic_path, atomic_write_text
from util.palette import load_mask_png, save_mask_png

# torch and davisinteractive (with util.davis_compat before it) are imported where needed, so a wrong --davis
# or --sequences fails in a fraction of a second

RESOLUTION = "480p"  # folder name davisinteractive hard-codes, whatever the real size
METRIC = "J_AND_F"
TIME_THRESHOLD = 60  # seconds: the package's fixed J&F@60s mark
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


class EvalSetupError(RuntimeError):
    """Bad arguments or data for the evaluation (the message is one line naming the argument or file)."""


# ---------------------------------------------------------------------------------------------------------------
# the DAVIS-layout root
# ---------------------------------------------------------------------------------------------------------------
def resolve_davis_root(path: str | os.PathLike) -> Path:
    """The folder holding ``Annotations/480p``: ``path/trainval`` (the official layout) or ``path`` itself."""
    path = Path(path).expanduser()
    for candidate in (path / "trainval", path):
        if (candidate / "Annotations" / RESOLUTION).is_dir():
            return candidate
    raise EvalSetupError(
        f"--davis {path}: not a DAVIS root (no Annotations/{RESOLUTION} in it or in its trainval/); pass the "
        f"DAVIS 2017 folder (with trainval/ inside) or a DAVIS-layout root, e.g. one written by "
        f"scripts/make_synthetic_davis.py")


def list_sequences(root: Path, subset: str, names: Sequence[str] | None = None) -> list[str]:
    """Sequences to evaluate: ``names`` if given, else ``ImageSets/2017/<subset>.txt``, else every annotated one."""
    annotated = root / "Annotations" / RESOLUTION
    if names:
        missing = [n for n in names if not (annotated / n).is_dir()]
        if missing:
            raise EvalSetupError(f"--sequences: {', '.join(missing)} not found in {annotated}")
        return list(dict.fromkeys(names))  # keep the order, drop repeats
    imageset = root / "ImageSets" / "2017" / f"{subset}.txt"
    if imageset.is_file():
        seqs = [line.strip() for line in imageset.read_text().splitlines() if line.strip()]
    else:
        seqs = sorted(p.name for p in annotated.iterdir() if p.is_dir())
    if not seqs:
        raise EvalSetupError(f"--subset {subset}: no sequences listed in {imageset} or found in {annotated}")
    return seqs


def frame_paths(root: Path, seq: str) -> list[Path]:
    folder = root / "JPEGImages" / RESOLUTION / seq
    if not folder.is_dir():
        raise EvalSetupError(f"{folder}: frames of sequence {seq!r} not found (the model needs JPEGImages/{RESOLUTION})")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def scan_sequence(root: Path, seq: str) -> dict[str, Any]:
    """davisinteractive metadata of a sequence from what is on disk.

    ``num_frames``: consecutive annotations ``00000.png``…; ``image_size`` ``[W, H]`` of frame 0;
    ``num_objects``: the largest object id in frame 0 (255 = void ignored); ``num_scribbles``: consecutive
    ``Scribbles/<seq>/001.json``….
    """
    ann = root / "Annotations" / RESOLUTION / seq
    num_frames = 0
    while (ann / f"{num_frames:05d}.png").is_file():
        num_frames += 1
    if num_frames == 0:
        raise EvalSetupError(f"{ann / '00000.png'}: first annotation of sequence {seq!r} not found")
    first = load_mask_png(ann / "00000.png")
    ids = first[first != 255]
    num_objects = int(ids.max()) if ids.size else 0
    if num_objects < 1:
        raise EvalSetupError(f"{ann / '00000.png'}: no object in frame 0 of {seq!r}; every object must be "
                             f"visible in the first frame")
    scribbles = root / "Scribbles" / seq
    num_scribbles = 0
    while (scribbles / f"{num_scribbles + 1:03d}.json").is_file():
        num_scribbles += 1
    if num_scribbles == 0:
        raise EvalSetupError(f"{scribbles / '001.json'}: initial scribble of sequence {seq!r} not found")
    return {"num_frames": num_frames, "num_objects": num_objects, "num_scribbles": num_scribbles,
            "image_size": [int(first.shape[1]), int(first.shape[0])]}


def check_sequence_files(root: Path, seq: str, davis: str, need_frames: bool = True) -> None:
    """Everything the session will read for ``seq``, checked before it starts (a failure inside the
    package's session would be a traceback after minutes of work): one annotation PNG per frame, each
    readable, and readable scribble JSON files (``001.json`` first). Raises :class:`CliError` naming the file."""
    import json as _json

    from PIL import Image

    ann = root / "Annotations" / RESOLUTION / seq
    if need_frames:
        frames = frame_paths(root, seq)
        if not frames:
            raise cli.CliError("--davis", davis, f"sequence {seq!r} has no frames in {frames_dir(root, seq)}",
                               "restore its frames or leave it out with --sequences")
        expected = [f"{p.stem}.png" for p in frames]
    else:
        expected = sorted(p.name for p in ann.glob("*.png"))
    for name in expected:
        path = ann / name
        if not path.is_file():
            raise cli.CliError("--davis", davis, f"annotation {path} is missing (sequence {seq!r} has a frame "
                               f"{Path(name).stem} but no mask for it)", "restore it or leave the sequence out "
                               "with --sequences")
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, ValueError, SyntaxError) as e:
            raise cli.CliError("--davis", davis, f"annotation {path} cannot be read ({type(e).__name__})",
                               "replace the file or leave the sequence out with --sequences") from None
    scribbles = sorted((root / "Scribbles" / seq).glob("*.json"))
    if not scribbles:
        raise cli.CliError("--davis", davis, f"sequence {seq!r} has no scribble file "
                           f"{root / 'Scribbles' / seq / '001.json'}", "restore it or leave the sequence out")
    for path in scribbles:
        try:
            doc = _json.loads(path.read_text())
            ok = isinstance(doc, dict) and isinstance(doc.get("scribbles"), list)
        except (OSError, UnicodeDecodeError, ValueError):
            ok = False
        if not ok:
            raise cli.CliError("--davis", davis, f"scribble file {path} is not readable scribble JSON "
                               "(expected {\"sequence\": ..., \"scribbles\": [...]})",
                               "replace it or leave the sequence out with --sequences")


def frames_dir(root: Path, seq: str) -> Path:
    return root / "JPEGImages" / RESOLUTION / seq


def register_sequences(root: Path, subset: str, names: Sequence[str]) -> dict[str, dict]:
    """Make ``names`` the package's ``subset``: unknown sequences are registered from disk, known ones keep the
    package's metadata. Downloads are blocked (a missing file is named instead). Returns the metadata used.

    Changes process-global ``Davis`` state: call inside ``davis_compat.preserved_davis_state()``.
    """
    import util.davis_compat as davis_compat  # noqa: I001  (before davisinteractive)
    from davisinteractive.dataset import Davis

    unknown = {seq: scan_sequence(root, seq) for seq in names if seq not in Davis.dataset}
    if unknown:
        davis_compat.register_sequences(unknown, subset)
    davis_compat.block_downloads()
    if list(Davis.sets[subset]) != list(names):
        Davis.sets[subset] = list(names)
    return {seq: dict(Davis.dataset[seq]) for seq in names}


def load_frames(root: Path, seq: str, num_frames: int) -> np.ndarray:
    """The sequence's frames, ``T×H×W×3`` uint8 RGB (PIL decoding, as the original's loader)."""
    from PIL import Image

    paths = frame_paths(root, seq)
    if len(paths) != num_frames:
        raise EvalSetupError(f"{root / 'JPEGImages' / RESOLUTION / seq}: {len(paths)} frames but {num_frames} "
                             f"annotations; every annotated frame needs its image")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise EvalSetupError(f"{paths[0].parent}: frames have different sizes {sorted(shapes)}")
    return np.stack(frames)


def load_ground_truth(root: Path, seq: str, num_frames: int) -> np.ndarray:
    """``T×H×W`` uint8 labels (for ``--oracle``)."""
    ann = root / "Annotations" / RESOLUTION / seq
    return np.stack([load_mask_png(ann / f"{t:05d}.png") for t in range(num_frames)])


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
def typed_report(df):
    """The package's report with numeric dtypes (pandas 3 gives every column as object)."""
    casts = {c: "float64" for c in ("jaccard", "contour", "j_and_f", "timing") if c in df.columns}
    casts.update({c: "int64" for c in ("scribble_idx", "interaction", "object_id", "frame") if c in df.columns})
    return df.astype(casts)


def write_plot(summary: dict, path: Path, title: str = "DAVIS interactive") -> None:
    """J&F against time (the package's curve) with the AUC and the J&F@60s mark, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(summary["curve"]["time"], dtype=np.float64)
    values = np.asarray(summary["curve"][METRIC], dtype=np.float64)
    at_threshold = float(summary["metric_at_threshold"][METRIC])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.plot(times, values, "-o", markersize=3, label=f"J&F (AUC {summary['auc']:.3f})")
    ax.fill_between(times, values, alpha=0.15)
    ax.axvline(TIME_THRESHOLD, color="tab:red", linestyle="--", linewidth=1)
    ax.plot([TIME_THRESHOLD], [at_threshold], "s", color="tab:red",
            label=f"J&F@{TIME_THRESHOLD}s {at_threshold:.3f}")
    ax.set_xlim(0, max(float(times.max()) if times.size else 0.0, TIME_THRESHOLD) * 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s, accumulated mean model time per interaction)")
    ax.set_ylabel("J&F")
    ax.set_title(f"{title}: AUC-J&F {summary['auc']:.3f}, J&F@{TIME_THRESHOLD}s {at_threshold:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_sample_masks(out: Path, scribble_idx: int, seq: str, masks: np.ndarray) -> None:
    """``<out>/masks/<scribble_idx - 1>/<seq>/%05d.png`` palette PNGs (the original's ``<user_iter>/<seq>``)."""
    folder = out / "masks" / str(int(scribble_idx) - 1) / seq
    for t, mask in enumerate(masks):
        save_mask_png(folder / f"{t:05d}.png", mask)


# ---------------------------------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Models:
    prop: Any  # torch.nn.Module (torch is imported lazily)
    fusion: Any
    s2m: Any


@dataclass
class InteractionRecord:
    sequence: str
    scribble_idx: int
    interaction: int  # 1-based, as the package's report
    frame: int
    propagated: bool
    model_time_s: float  # wall time of the model step (what the package's timing measures, minus its overhead)
    model_cpu_s: float  # CPU time of this process over the same step (all threads), for shared machines


@dataclass
class RunResult:
    summary: dict | None  # None on a torchrun rank other than 0 (rank 0 writes the report)
    report: Any  # pandas DataFrame (None where summary is None)
    records: list[InteractionRecord] = field(default_factory=list)
    exit_code: int = 0  # 1 when a sequence failed


def resolve_device(name: str):
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` → ``torch.device`` (:func:`util.cli.device`)."""
    return cli.device("--device", name)


def load_models(args: argparse.Namespace, device) -> Models:
    from model.factory import load_fusion, load_propagation, load_s2m
    return Models(prop=load_propagation(args.prop_model, device), fusion=load_fusion(args.fusion_model, device),
                  s2m=load_s2m(args.s2m_model, device))


class _Progress:
    """A progressbar2 bar over all interactions of all samples, with the sample and interaction and an ETA."""

    def __init__(self, samples: list[tuple[str, int]], max_interactions: int, enabled: bool = True) -> None:
        import progressbar

        self.samples, self.max_i = samples, max_interactions
        self.bar = None
        if enabled:
            widgets = [progressbar.Variable("where", format="{formatted_value}", width=40), " ",
                       progressbar.Bar(), " ", progressbar.Percentage(), " ", progressbar.ETA()]
            self.bar = progressbar.ProgressBar(max_value=max(1, len(samples) * max_interactions), widgets=widgets,
                                               variables={"where": ""}, redirect_stdout=True, fd=sys.stderr)
            self.bar.start()

    def update(self, sample_idx: int, interactions_done: int) -> None:
        if self.bar is None:
            return
        seq, scribble_idx = self.samples[sample_idx]
        where = (f"{seq} #{scribble_idx} ({sample_idx + 1}/{len(self.samples)}) "
                 f"int {interactions_done}/{self.max_i}")
        self.bar.update(min(sample_idx * self.max_i + interactions_done, self.bar.max_value), where=where)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def _sample_score(report, seq: str, scribble_idx: int) -> tuple[int, float]:
    """(interactions scored, mean J&F after the last scored one) of one sample, from the package's report."""
    df = report[(report["sequence"] == seq) & (report["scribble_idx"].astype("int64") == int(scribble_idx))]
    if len(df) == 0:
        return 0, float("nan")
    inter = df["interaction"].astype("int64")
    last = int(inter.max())
    return last, float(df[inter == last]["j_and_f"].astype("float64").mean())


def evaluate(args: argparse.Namespace) -> RunResult:
    """Run the whole protocol; raises :class:`EvalSetupError` / ``CheckpointError`` / ``DavisDataMissingError``.

    The sequences are the units of :mod:`util.batch`: each runs in its own package session (the robot is
    deterministic, so a sequence's report rows do not depend on which others run), its report rows are
    kept in ``<output>/.parts/<seq>.csv`` and its record in ``<output>/.done``; under torchrun the
    sequences are shared among the processes, and rank 0 summarises the rows of all sequences with the
    package's own ``summarize_report``, so one process and many give the same AUC and J&F@60s for the
    same rows. A rank other than 0 returns a result without summary."""
    cli.int_in_range("--max_interactions", args.max_interactions, 1, 16, "davisinteractive allows 1 to 16")
    cli.positive_float("--max_time", args.max_time)
    cli.input_dir("--davis", args.davis, "DAVIS root")
    root = resolve_davis_root(args.davis)
    names = list_sequences(root, args.subset, args.sequences)
    if args.device not in (None, "auto"):   # (needs torch: only when a device is named)
        resolve_device(args.device)
    if not args.oracle:
        for flag, path in (("--prop_model", args.prop_model), ("--fusion_model", args.fusion_model),
                           ("--s2m_model", args.s2m_model)):
            cli.input_file(flag, path, "checkpoint", "download the weights with python download_model.py "
                           f"or pass {flag} PATH")
    for seq in names:
        # fail now, not after an hour inside the session, when a file of a sequence is missing or broken
        check_sequence_files(root, seq, args.davis, need_frames=not args.oracle)
    out = cli.output_dir("--output", args.output, {"--davis": args.davis})
    from util.batch import init_batch, shutdown_batch
    try:
        ctx = init_batch(args.device)   # this process's device: cuda:LOCAL_RANK under torchrun
    except ValueError as e:
        problem, _, fix = str(e).partition("; ")
        raise cli.CliError("--device", args.device, problem, fix or None) from None
    try:
        return _evaluate_sequences(args, ctx, root, names, out)
    finally:
        shutdown_batch(ctx)


def _run_sequence(args: argparse.Namespace, root: Path, seq: str, meta: dict, models: Models | None, device,
                  parts: Path) -> tuple[Any, list[InteractionRecord]]:
    """Every sample of ``seq`` in one package session: (its typed report rows, its interaction records)."""
    import torch
    from davisinteractive.session import DavisInteractiveSession

    from inference_core.davis_processor import DAVISProcessor

    out = Path(args.output)
    register_sequences(root, args.subset, [seq])
    records: list[InteractionRecord] = []
    # the package's max_time is per object for the whole sample; ours is per object and interaction
    session_max_time = args.max_interactions * args.max_time
    with torch.inference_mode(), DavisInteractiveSession(
            host="localhost", user_key="fastermivos", davis_root=str(root), subset=args.subset,
            max_nb_interactions=args.max_interactions, max_time=session_max_time,
            metric_to_optimize=METRIC, report_save_dir=str(parts / "package" / seq)) as sess:
        samples = [(str(s), int(i)) for s, i in sess.samples]
        progress = _Progress(samples, args.max_interactions, enabled=not args.no_progress)
        n = int(meta["num_frames"])
        # frames are read before the first get_scribbles, outside the timed window
        frames = load_ground_truth(root, seq, n) if args.oracle else load_frames(root, seq, n)
        sample_idx, processor, last_masks = -1, None, None

        def finish_sample() -> None:
            seq_, scribble_idx = samples[sample_idx]
            if args.save_mask and last_masks is not None:
                save_sample_masks(out, scribble_idx, seq_, last_masks)
            done, score = _sample_score(sess.get_report(), seq_, scribble_idx)
            print(f"{seq_} scribble {scribble_idx} ({sample_idx + 1}/{len(samples)}): {done} interactions, "
                  f"J&F {score:.4f}")

        while sess.next():
            if sess.sample_idx != sample_idx:
                if sample_idx >= 0:
                    finish_sample()
                sample_idx, last_masks = sess.sample_idx, None
                progress.update(sample_idx, 0)
            sequence, scribbles, new_sample = sess.get_scribbles(only_last=True)
            start, start_cpu = time.perf_counter(), time.process_time()
            if args.oracle:
                masks, next_frames, frame, propagated = frames.copy(), None, -1, True
            else:
                if new_sample:
                    processor = None  # release the previous sample's state first
                    processor = DAVISProcessor(models.prop, models.fusion, models.s2m, frames,
                                               int(meta["num_objects"]), device=device)
                propagated = processor.propagates(processor.interaction_count)
                masks, next_frames, frame = processor.interact(scribbles)
            model_time, model_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            sess.submit_masks(masks, next_frames)
            last_masks = masks
            records.append(InteractionRecord(sequence, samples[sample_idx][1], sess.interaction_nb, int(frame),
                                             bool(propagated), model_time, model_cpu))
            progress.update(sample_idx, sess.interaction_nb)
        if sample_idx >= 0:
            finish_sample()  # the original never saved the last sample
        progress.finish()
        report = typed_report(sess.get_report())
    return report, records


def read_part(path: Path):
    """A sequence's report rows as written by :func:`_evaluate_sequences` (pandas reads the floats back exactly)."""
    import pandas as pd
    return typed_report(pd.read_csv(path, dtype={"sequence": str}))


def summarize_rows(root: Path, subset: str, names: Sequence[str], report, max_interactions: int,
                   max_time: float) -> dict:
    """The package's global summary (AUC, J&F@60s, curve) of the report rows of ``names``, computed by
    its ``EvaluationService.summarize_report`` as its session does at the end of a run.

    Changes process-global ``Davis`` state: call inside ``davis_compat.preserved_davis_state()``."""
    from davisinteractive.evaluation import EvaluationService

    register_sequences(root, subset, names)
    service = EvaluationService(subset, davis_root=str(root), max_t=max_interactions * max_time,
                                max_i=max_interactions, metric_to_optimize=METRIC)
    return service.summarize_report(report)


def _evaluate_sequences(args: argparse.Namespace, ctx, root: Path, names: list[str], out: Path) -> RunResult:
    import pandas as pd
    import torch

    import util.davis_compat as davis_compat  # noqa: I001  (before davisinteractive)
    from util.batch import WorkItem, file_identity, report_failures, run_batch, summary_line

    device = ctx.device
    models = None if args.oracle else load_models(args, device)
    parts = out / ".parts"
    settings = {"job": "eval_interactive_davis", "root": str(root.resolve()), "subset": args.subset,
                "max_interactions": args.max_interactions, "max_time": args.max_time, "oracle": args.oracle,
                "save_mask": args.save_mask,
                "models": None if args.oracle else [file_identity(p) for p in
                                                    (args.prop_model, args.fusion_model, args.s2m_model)]}
    start = time.time()
    with davis_compat.preserved_davis_state():
        meta = register_sequences(root, args.subset, names)
        items = [WorkItem(seq, int(meta[seq]["num_frames"]) * int(meta[seq]["num_scribbles"])) for seq in names]
        print(f"{len(names)} sequences from {root} on {ctx.world_size} process(es); "
              f"{'oracle (ground truth)' if args.oracle else 'model on ' + str(device)}")

        def process(item: WorkItem, data: None) -> dict:
            report, records = _run_sequence(args, root, item.name, meta[item.name], models, device, parts)
            atomic_write_text(parts / f"{urllib.parse.quote(item.name, safe='')}.csv", report.to_csv(index=False))
            return {"interactions": [vars(r) for r in records]}

        outcome = run_batch(ctx, items, process, out, settings, unit="sequences")
        if not ctx.is_main:
            return RunResult(summary=None, report=None, records=[], exit_code=outcome.exit_code)
        done = [seq for seq in names if seq in outcome.results]
        if not done:
            report_failures(outcome)
            raise EvalSetupError(f"every sequence failed, e.g. {names[0]}: {outcome.failed[names[0]]}")
        report = pd.concat([read_part(parts / f"{urllib.parse.quote(seq, safe='')}.csv") for seq in done],
                           ignore_index=True)
        summary = summarize_rows(root, args.subset, done, report, args.max_interactions, args.max_time)
    records = [InteractionRecord(**r) for seq in done for r in outcome.results[seq]["interactions"]]
    summary = json.loads(json.dumps(summary, default=float))
    atomic_write_text(out / "summary.json", json.dumps(summary))
    report_name = f"result_{time.strftime('%Y%m%d_%H%M%S')}.csv"
    atomic_write_text(out / "report.csv", report.to_csv(index=False))
    atomic_write_text(out / report_name, report.to_csv(index=False))
    write_plot(summary, out / "jf_vs_time.png",
               title="oracle" if args.oracle else "DAVIS interactive")
    info = {
        "settings": {k: v for k, v in vars(args).items()},
        "davis_root": str(root), "device": str(device), "torch_threads": torch.get_num_threads(),
        "processes": ctx.world_size,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "session_max_time_per_object_s": args.max_interactions * args.max_time,
        "sequences": {seq: meta[seq] for seq in done}, "package_report": report_name,
        "failed": outcome.failed,
        "auc": summary.get("auc"), "jf_at_60s": summary.get("metric_at_threshold", {}).get(METRIC),
        "model_time": _time_stats(records),
        "interactions": [vars(r) for r in records],
    }
    atomic_write_text(out / "run_info.json", json.dumps(info, indent=1, default=str))
    report_failures(outcome)
    print(summary_line(outcome, unit="sequences", elapsed_s=time.time() - start), file=sys.stderr)
    return RunResult(summary=summary, report=report, records=records, exit_code=outcome.exit_code)


def _time_stats(records: list[InteractionRecord]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        v = np.asarray(values)
        return {"count": int(v.size), "mean_s": float(v.mean()), "median_s": float(np.median(v)),
                "max_s": float(v.max())}

    out = {}
    for kind, keep in (("all", lambda r: True), ("propagating", lambda r: r.propagated),
                       ("s2m_only", lambda r: not r.propagated)):
        chosen = [r for r in records if keep(r)]
        out[kind] = stats([r.model_time_s for r in chosen])
        out[kind + "_cpu"] = stats([r.model_cpu_s for r in chosen])
    return out


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description="DAVIS interactive-track evaluation (official davisinteractive 1.0.4 "
                                            "session and robot).")
    p.add_argument("--prop_model", default="saves/propagation_model.pth")
    p.add_argument("--fusion_model", default="saves/fusion.pth")
    p.add_argument("--s2m_model", default="saves/s2m.pth")
    p.add_argument("--davis", default="../DAVIS/2017",
                   help="DAVIS 2017 folder (with trainval/) or any DAVIS-layout root (JPEGImages/, Annotations/, "
                        "Scribbles/ at 480p)")
    p.add_argument("--output", required=True, help="folder for summary.json, the report, the plot and masks")
    p.add_argument("--save_mask", action="store_true", help="save every sample's final masks as palette PNGs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--max_interactions", type=int, default=8, help="interactions per sample (official: 8)")
    p.add_argument("--max_time", type=float, default=30,
                   help="seconds per object and interaction (official: 30, i.e. 8*30 s per object per sample)")
    p.add_argument("--subset", choices=("val", "train"), default="val")
    p.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    p.add_argument("--oracle", action="store_true",
                   help="test option: submit the ground truth instead of the model's masks (checks the "
                        "submission path; scores J&F 1.0)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar (per-sample lines are still printed)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results: list[RunResult] = []

    def run(args: argparse.Namespace) -> int:
        results.append(evaluate(args))
        return 0

    rc = cli.run_cli(run, args, (EvalSetupError, "util.checkpoint:CheckpointError",
                                 "util.davis_compat:DavisDataMissingError"))
    if rc != 0:
        return rc
    result = results[0]
    summary = result.summary
    if summary is None:
        return result.exit_code
    at_60 = summary["metric_at_threshold"][METRIC]
    stats = _time_stats(result.records)["all"]
    mean_time = f"{stats['mean_s']:.3f} s" if stats else "n/a"
    print(f"AUC-J&F {summary['auc']:.4f}  J&F@{TIME_THRESHOLD}s {at_60:.4f}  "
          f"(mean model time per interaction {mean_time}); outputs in {args.output}")
    return result.exit_code if not math.isnan(float(summary["auc"])) else 1


if __name__ == "__main__":
    sys.exit(main())
