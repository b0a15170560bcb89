"""Benchmark of issue 8: FasterMiVOS against the recorded baseline of the original MiVOS.

Workload (deterministic, formula weights from ``--reference``; defaults = the issue's baseline):

* a synthetic clip of ``--frames`` 24 frames at ``--size`` 854×480 (padded to 864×480) with ``--objects`` 2
  moving textured objects (``dataset.synthetic.make_clip``), given to ``InferenceCore`` as uint8 frames;
* round 1: ``interact`` at the middle frame (12) with the ground-truth one-hot mask → propagates 23 frames;
* round 2: ``interact`` at frame 0 with the ground truth spoiled by a few wrong discs → propagates the 11
  frames up to frame 12 with difference-aware fusion;
* one S2M scribble interaction (every object + background strokes) and three f-BRS clicks (2 positive,
  1 negative) on single frames.

Every precision mode runs in its own subprocess (so peak RSS is per mode), ``--runs`` times (median).
Fast modes are compared pixel by pixel with the exact float32 path (masks after each round, S2M labels,
f-BRS masks). ``--long-clip`` instead measures memory on a lazily generated 1000-frame clip.

    python benchmark.py                                   # the issue's workload, fp32 + bf16 where supported
    python benchmark.py --device cuda --precision fp32,fp16
    python benchmark.py --long-clip --out long.json
    python benchmark.py --tiny --out /tmp/tiny.json       # CI configuration (correctness, not speed)

``--weights DIR`` keeps the generated checkpoints for later runs. On a machine shared with other jobs,
``--threads 1`` gives steadier numbers: two OpenMP threads on a busy 2-core machine mostly wait for
each other (measured 10× slower than one thread under a load of 12).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA = "fastermivos-benchmark/1"
PRECISIONS = ("fp32", "bf16", "fp16", "orig")
# "orig": float32 through the original's compute path on the same machine (no cached decoder skips, NCHW
# layout, plain f-BRS modules) — a same-machine stand-in for the recorded baseline


class OriginalPath(__import__("torch").nn.Module):
    """Exposes only the original PropagationNetwork methods, so InferenceCore takes the original's path
    (query encoder + full decoder every time) instead of the cached-skip path."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def memorize(self, frame, masks):
        return self.net.memorize(frame, masks)

    def get_query_values(self, frame):
        return self.net.get_query_values(frame)

    def segment_with_query(self, *args):
        return self.net.segment_with_query(*args)

    def get_attention(self, *args):
        return self.net.get_attention(*args)
ROUND_METRICS = ("round1_s_per_frame", "round2_s_per_frame")
TIME_METRICS = ROUND_METRICS + ("s2m_s", "fbrs_click1_s", "fbrs_click2_s", "fbrs_click3_s")
AGREEMENT_KEYS = ("round1", "round2", "s2m", "fbrs_click1", "fbrs_click2", "fbrs_click3")

# The original MiVOS on the reference machine (issue 8): 2 cores with AVX-512 BF16, no GPU, formula weights,
# float32, 2 threads, median of 3 runs, this workload at its default size.
BASELINE: dict[str, Any] = {
    "source": "issue 8: original MiVOS, reference CI machine (2 cores, AVX-512 BF16, no GPU), formula weights, "
              "float32, 2 threads, median of 3 runs",
    "workload": {"frames": 24, "width": 854, "height": 480, "objects": 2, "mem_freq": 5},
    "round1_s_per_frame": 4.10,   # 94.4 s / 23 frames
    "round2_s_per_frame": 5.29,   # 58.2 s / 11 frames (fusion)
    "s2m_s": 2.11,
    "fbrs_click1_s": 4.23,
    "fbrs_click2_s": 1.50,
    "fbrs_click3_s": None,        # not recorded
    "peak_rss_bytes": None,       # not recorded for this workload
}
# Targets of issue 8 (seconds); reported next to the numbers, never asserted.
TARGETS = {"fp32": {"round1_s_per_frame": 2.9, "round2_s_per_frame": 3.5, "fbrs_click1_s": 2.0},
           "fast": {"round1_s_per_frame": 1.6}}
LONG_CLIP_TARGET_RSS = 5e9

# query features per h×w cell (f16 1024 + f8 512·4 + f4 256·16 + k16 128 + v16 512) and memory per object
# and cell (k16 128 + v16 512): used for the original-layout estimate of the long clip
FEATURE_FLOATS_PER_CELL = 1024 + 512 * 4 + 256 * 16 + 128 + 512
MEMORY_FLOATS_PER_CELL = 128 + 512
ORIGINAL_BUFFER_FRAMES = 105


class BenchmarkError(Exception):
    """A bad argument or environment problem, reported as one line."""


# =============================================================================================================
# environment: peak memory, CPU features, precision
# =============================================================================================================
def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM; getrusage as a fallback)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def current_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), and a line saying why."""
    import torch
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    found = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    note = (f"torch CPU capability {capability}; bf16 flags in /proc/cpuinfo: "
            f"{', '.join(found) if found else 'none (no avx512_bf16 / amx_bf16)'}")
    return native, note


def available_modes(requested: list[str], device: str, force: bool) -> tuple[list[str], dict[str, str], list[str]]:
    """Split the requested precisions into those to run and those skipped (with the reason)."""
    import torch
    run, skipped, notes = [], {}, []
    if device == "cpu":
        native, note = cpu_bf16_support()
        notes.append(note)
    for mode in requested:
        reason = None
        if mode == "bf16":
            if device == "cpu" and not native:
                reason = f"this CPU has no native bfloat16 ({note}); emulated bf16 is slower than fp32"
            elif device == "cuda" and not torch.cuda.is_bf16_supported():
                reason = "this GPU does not support bfloat16"
        elif mode == "fp16" and device == "cpu":
            reason = "float16 autocast is a CUDA mode (CPU float16 convolutions are emulated and slow)"
        if reason is not None and not force:
            skipped[mode] = reason + " (--force-precision runs it anyway)"
        else:
            if reason is not None:
                notes.append(f"{mode} forced: {reason}")
            run.append(mode)
    return run, skipped, notes


def torch_dtype(mode: str):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def precision_kwargs(fn: Callable, mode: str) -> dict[str, Any] | None:
    """``{'precision': ...}`` when ``fn`` takes a ``precision`` keyword, else None (use autocast)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if "precision" not in params or mode == "orig":
        return None
    return {"precision": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[mode]}


def autocast_context(mode: str, device: str, native: bool) -> contextlib.AbstractContextManager:
    """Autocast for a fast mode unless the component handles precision itself (``native``)."""
    import torch
    if mode in ("fp32", "orig") or native:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch_dtype(mode))


# =============================================================================================================
# weights
# =============================================================================================================
def _build_networks() -> dict[str, Any]:
    """Freshly built (untrained) networks of the four checkpoints, by checkpoint file name."""
    from model.fbrs import build_fbrs_model
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    return {"propagation_model.pth": PropagationNetwork(top_k=50), "fusion.pth": FusionNet(),
            "s2m.pth": deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False),
            "fbrs.pth": build_fbrs_model()}


WEIGHT_FILES = ("propagation_model.pth", "fusion.pth", "s2m.pth", "fbrs.pth")
WEIGHTS_MARKER = "benchmark_weights.json"


def write_weights(reference: Path, out_dir: Path, seed: int) -> tuple[str, str]:
    """Save the four checkpoints (formula weights, or a seeded random init if ``reference`` lacks
    ``formula_weights.py``) into ``out_dir``; returns (kind, note). A folder already holding the
    weights of the same kind and seed (``--weights``) is reused as is."""
    import torch
    formula_file = reference / "formula_weights.py"
    wanted = {"kind": "formula" if formula_file.is_file() else "random", "seed": seed}
    marker = out_dir / WEIGHTS_MARKER
    if marker.is_file() and all((out_dir / f).is_file() for f in WEIGHT_FILES):
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            return saved["kind"], saved["note"] + f" (reused from {out_dir})"
    formula = None
    if formula_file.is_file():
        spec = importlib.util.spec_from_file_location("formula_weights", formula_file)
        formula = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(formula)
        kind, note = "formula", f"formula weights from {formula_file}"
    else:
        kind = "random"
        note = (f"{formula_file} not found: seeded random weights (seed {seed}); timings are comparable, "
                f"agreements are not those of the formula weights (pass --reference DIR)")
        warnings.warn(note)
    torch.manual_seed(seed)
    for name, net in _build_networks().items():
        state = formula.formula_state_dict(net.state_dict()) if formula is not None else net.state_dict()
        torch.save(state, out_dir / name)
    marker.write_text(json.dumps(dict(wanted, note=note)))
    return kind, note


def load_networks(weights: Path, device: str) -> dict[str, Any]:
    from model.factory import load_fbrs, load_fusion, load_propagation, load_s2m
    return {"prop": load_propagation(weights / "propagation_model.pth", device),
            "fusion": load_fusion(weights / "fusion.pth", device),
            "s2m": load_s2m(weights / "s2m.pth", device),
            "fbrs": load_fbrs(weights / "fbrs.pth", device)}


# =============================================================================================================
# workload
# =============================================================================================================
def one_hot(labels: np.ndarray, num_objects: int) -> "torch.Tensor":
    """``H×W`` labels → ``(K+1)×1×H×W`` float32 one-hot, background first."""
    import torch
    ids = np.arange(num_objects + 1, dtype=labels.dtype).reshape(-1, 1, 1)
    return torch.from_numpy((labels[None] == ids).astype(np.float32)).unsqueeze(1)


def spoil_labels(labels: np.ndarray, num_objects: int, seed: int, discs: int = 4) -> np.ndarray:
    """The ground truth with ``discs`` wrong discs (each painted with a different label): the
    'user correction' of round 2 differs from round 1 in known places."""
    import cv2
    rng = np.random.default_rng(seed)
    out = labels.copy()
    h, w = labels.shape
    radius = max(3, int(0.05 * min(h, w)))
    for i in range(discs):
        # half the discs on objects (erasing part of them), half anywhere
        ys, xs = np.nonzero(labels > 0) if i % 2 == 0 and labels.any() else np.nonzero(np.ones_like(labels))
        j = int(rng.integers(len(ys)))
        cy, cx = int(ys[j]), int(xs[j])
        wrong = (int(labels[cy, cx]) + 1 + int(rng.integers(num_objects))) % (num_objects + 1)
        cv2.circle(out, (cx, cy), radius, int(wrong), -1)
    return out


def interior_point(mask: np.ndarray, exclude: list[tuple[int, int]] = (), exclude_radius: float = 0) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border (and from the ``exclude`` points)."""
    import cv2
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    if exclude:
        yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
        for x, y in exclude:
            dist[(yy - y) ** 2 + (xx - x) ** 2 < exclude_radius ** 2] = 0
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def make_scribbles(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """A GUI scribble canvas (255 none, 0 background, k object k): one stroke inside every object along
    its widest interior row and one background stroke just outside the objects."""
    import cv2
    h, w = labels.shape
    canvas = np.full((h, w), 255, np.uint8)
    thick = max(2, min(h, w) // 120)
    kernel = np.ones((2 * thick + 3, 2 * thick + 3), np.uint8)
    for k in range(1, num_objects + 1):
        inner = cv2.erode((labels == k).astype(np.uint8), kernel)
        if not inner.any():
            continue
        x, y = interior_point(inner)
        # the interior run of that row through (x, y)
        left = x
        while left - 1 >= 0 and inner[y, left - 1]:
            left -= 1
        right = x
        while right + 1 < w and inner[y, right + 1]:
            right += 1
        cv2.line(canvas, (left, y), (right, y), int(k), thick)
    background = cv2.erode((labels == 0).astype(np.uint8), np.ones((15, 15), np.uint8))
    ys, xs = np.nonzero(background)
    if len(ys):
        y = int(np.median(ys))
        row = np.nonzero(background[y])[0]
        cv2.line(canvas, (int(row[0]), y), (int(row[0]) + max(4, w // 6), y), 0, thick)
        canvas[(labels != 0) & (canvas == 0)] = 255  # a background stroke never crosses an object
    return canvas


def fbrs_clicks(labels: np.ndarray) -> list[tuple[int, int, bool]]:
    """Three clicks (x, y, positive) on object 1: two positive inside it, one negative next to it."""
    import cv2
    obj = labels == 1
    if not obj.any():
        raise BenchmarkError("the f-BRS frame has no object 1; choose another --size/--frames")
    first = interior_point(obj)
    radius = max(4.0, 0.5 * float(cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5).max()))
    second = interior_point(obj, [first], radius)
    ring = cv2.dilate(obj.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & (labels == 0)
    if not ring.any():
        ring = labels == 0
    ys, xs = np.nonzero(ring)
    j = int(np.argmin((ys - first[1]) ** 2 + (xs - first[0]) ** 2))
    return [(first[0], first[1], True), (second[0], second[1], True), (int(xs[j]), int(ys[j]), False)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same label (1.0 = identical)."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare masks of shapes {a.shape} and {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0


class Progress:
    """Per-frame progress on stderr (progressbar2), silenced with --quiet."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet, self.bar, self.done = label, quiet, None, 0

    def total(self, n: int) -> None:
        if self.quiet:
            return
        import progressbar
        widgets = [f"{self.label} ", progressbar.Counter(), f"/{n} ", progressbar.Bar(), " ", progressbar.Timer()]
        self.bar = progressbar.ProgressBar(max_value=n, widgets=widgets, fd=sys.stderr).start()

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.done)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def time_metrics(clicks: int) -> tuple[str, ...]:
    return ROUND_METRICS + ("s2m_s",) + tuple(f"fbrs_click{i}_s" for i in range(1, clicks + 1))


def agreement_keys(clicks: int) -> tuple[str, ...]:
    return AGREEMENT_KEYS[:3 + clicks]


# =============================================================================================================
# worker: one precision mode, in its own process
# =============================================================================================================
def _sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def worker_main(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    torch.set_num_threads(cfg["threads"])
    if cfg["long_clip"]:
        return long_clip_worker(cfg)
    return clip_worker(cfg)


def clip_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from dataset.synthetic import make_clip
    from inference_core import InferenceCore
    from inference_core.interaction.fbrs_controller import FBRSController
    from inference_core.interaction.s2m_controller import S2MController
    from model.aggregate import aggregate_wbg
    from util.tensor_util import compute_pad, unpad

    mode, device, quiet = cfg["mode"], cfg["device"], cfg["quiet"]
    k, t_len = cfg["objects"], cfg["frames"]
    clip = make_clip(num_frames=t_len, width=cfg["width"], height=cfg["height"], num_objects=k, seed=cfg["seed"])
    nets = load_networks(Path(cfg["weights"]), device)
    pad = compute_pad(cfg["height"], cfg["width"])

    first_idx = t_len // 2                       # round 1: the middle frame (12 of 24)
    second_idx = 0                               # round 2: the first frame, fused up to first_idx
    s2m_idx = max(1, t_len // 4) if t_len > 2 else 0
    fbrs_idx = min(t_len - 1, (3 * t_len) // 4)
    round1_mask = one_hot(clip.labels[first_idx], k)
    round2_mask = one_hot(spoil_labels(clip.labels[second_idx], k, cfg["seed"]), k)
    scribbles = make_scribbles(clip.labels[s2m_idx], k)
    clicks = fbrs_clicks(clip.labels[fbrs_idx])[:cfg["clicks"]]

    core_kw = precision_kwargs(InferenceCore.__init__, mode)
    s2m_kw = precision_kwargs(S2MController.__init__, mode)
    fbrs_kw = precision_kwargs(FBRSController.__init__, mode)
    via = {"core": "InferenceCore(precision=...)" if core_kw else "torch.autocast",
           "s2m": "S2MController(precision=...)" if s2m_kw else "torch.autocast",
           "fbrs": "FBRSController(precision=...)" if fbrs_kw else "torch.autocast"}
    if mode == "fp32":
        via = {key: "float32" for key in via}
    prop_net = nets["prop"]
    if mode == "orig":
        via = {key: "float32, original compute path" for key in via}
        core_kw = {"channels_last": False}
        prop_net = OriginalPath(nets["prop"])

    keys = agreement_keys(len(clicks))
    runs, first_masks, run_agreement, fbrs_fp32 = [], None, {key: 1.0 for key in keys}, False
    for run in range(cfg["runs"]):
        tag = f"[{mode} run {run + 1}/{cfg['runs']}]"
        timings: dict[str, float] = {}
        masks: dict[str, np.ndarray] = {}
        core = InferenceCore(prop_net, nets["fusion"], clip.frames, k, mem_profile=0,
                             mem_freq=cfg["mem_freq"], device=device, **(core_kw or {}))
        for name, idx, mask in (("round1", first_idx, round1_mask), ("round2", second_idx, round2_mask)):
            backward, forward = core.pass_bounds(idx)
            n_frames = forward - backward - 2
            bar = Progress(f"{tag} {name} @{idx}", quiet)
            with autocast_context(mode, device, core_kw is not None):
                _sync(device)
                start = time.perf_counter()
                core.interact(mask, idx, bar.total, bar.step)
                _sync(device)
                elapsed = time.perf_counter() - start
            bar.finish()
            timings[f"{name}_s"] = elapsed
            timings[f"{name}_frames"] = n_frames
            timings[f"{name}_s_per_frame"] = elapsed / max(n_frames, 1)
            masks[name] = core.np_masks.copy()

        # S2M: one scribble interaction on a frame, all objects (the GUI's controller + aggregation)
        s2m = S2MController(nets["s2m"], k, ignore_class=255, device=device, **(s2m_kw or {}))
        image, prev = core.get_image(s2m_idx), core.get_mask(s2m_idx)
        with torch.inference_mode(), autocast_context(mode, device, s2m_kw is not None):
            _sync(device)
            start = time.perf_counter()
            prob = aggregate_wbg(s2m.interact(image, prev, scribbles), keep_bg=True)
            labels = torch.argmax(prob, dim=0)[0]
            _sync(device)
            timings["s2m_s"] = time.perf_counter() - start
        masks["s2m"] = unpad(labels.cpu().numpy().astype(np.uint8), pad)

        # f-BRS: up to three clicks on one object (the first click starts the session)
        image = core.get_image(fbrs_idx)
        try:
            fbrs_timings, fbrs_masks = run_fbrs(nets["fbrs"], image, clicks, pad, mode, device, fbrs_kw,
                                                use_autocast=not fbrs_fp32)
        except (TypeError, RuntimeError) as e:
            if mode in ("fp32", "orig") or fbrs_kw is not None or fbrs_fp32:
                raise
            # autocast reaches code that cannot take a reduced-precision tensor: measure f-BRS in float32
            fbrs_fp32 = True
            via["fbrs"] = f"float32 (autocast failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
            log(f"{tag} f-BRS under autocast failed ({e}); f-BRS runs in float32 in this mode", quiet)
            fbrs_timings, fbrs_masks = run_fbrs(nets["fbrs"], image, clicks, pad, mode, device, fbrs_kw,
                                                use_autocast=False)
        timings.update(fbrs_timings)
        masks.update(fbrs_masks)
        log(f"{tag} " + ", ".join(f"{m} {timings[m]:.3f}" for m in time_metrics(len(clicks))), quiet)

        runs.append(timings)
        if first_masks is None:
            first_masks = masks
        else:
            for key in keys:
                run_agreement[key] = min(run_agreement[key], agreement(first_masks[key], masks[key]))
        del core, s2m

    np.savez_compressed(cfg["masks_out"], **first_masks)
    return {"mode": mode, "precision_via": via, "runs": runs, "peak_rss_bytes": peak_rss_bytes(),
            "run_to_run_agreement": run_agreement,
            "workload": {"round1_frame": first_idx, "round2_frame": second_idx, "s2m_frame": s2m_idx,
                         "fbrs_frame": fbrs_idx, "fbrs_clicks_xy_positive": [list(c) for c in clicks],
                         "round1_frames": runs[0]["round1_frames"], "round2_frames": runs[0]["round2_frames"]}}


def run_fbrs(net, image, clicks, pad, mode: str, device: str, fbrs_kw: dict | None,
             use_autocast: bool) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The clicks through a fresh FBRSController: per-click latency and binary mask (un-padded)."""
    from inference_core.interaction.fbrs_controller import FBRSController
    from util.tensor_util import unpad
    fbrs = FBRSController(net, device=device, **(fbrs_kw or {}))
    timings, masks = {}, {}
    for i, (x, y, positive) in enumerate(clicks, 1):
        with autocast_context(mode, device, fbrs_kw is not None or not use_autocast):
            _sync(device)
            start = time.perf_counter()
            out = fbrs.interact(image, float(x + pad[0]), float(y + pad[2]), positive)
            _sync(device)
            timings[f"fbrs_click{i}_s"] = time.perf_counter() - start
        masks[f"fbrs_click{i}"] = unpad((out[0, 0] > 0.5).float().cpu().numpy().astype(np.uint8), pad)
    return timings, masks


# =============================================================================================================
# long clip: a lazily generated 1000-frame clip
# =============================================================================================================
class ProceduralClip:
    """A long clip generated per frame on demand (``len()``, ``[t] -> H×W×3 uint8 RGB``, ``labels(t)``):
    ``num_objects`` textured ellipses drifting and turning over a textured background. Holds only the
    background and the object textures (a few MB), never the frames; deterministic from ``seed``."""

    def __init__(self, num_frames: int, width: int, height: int, num_objects: int, seed: int = 0):
        import cv2
        self.num_frames, self.width, self.height, self.num_objects = num_frames, width, height, num_objects
        self.seed = seed
        rng = np.random.default_rng(seed)

        def texture(h: int, w: int, cell: int) -> np.ndarray:
            coarse = rng.random((h // cell + 2, w // cell + 2, 3), dtype=np.float32)
            return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)

        self.background = (255 * (0.25 + 0.5 * texture(height, width, 24))).astype(np.uint8)
        short = min(width, height)
        self.objects = []
        for k in range(num_objects):
            axes = (short * float(rng.uniform(0.10, 0.16)), short * float(rng.uniform(0.07, 0.11)))
            size = int(2 * max(axes)) + 4
            tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
            tex = (255 * np.clip(texture(size, size, 6) * tint, 0, 1)).astype(np.uint8)
            centre = np.array([width * (k + 0.5) / num_objects, height * float(rng.uniform(0.35, 0.65))])
            amplitude = np.array([width * 0.5 / num_objects - max(axes), height * 0.3])
            self.objects.append({"axes": axes, "texture": tex, "centre": centre, "amplitude": amplitude,
                                 "omega": rng.uniform(0.01, 0.03, size=2), "phase": rng.uniform(0, 2 * math.pi, 2),
                                 "angle0": float(rng.uniform(0, 180)), "spin": float(rng.uniform(-1.5, 1.5))})

    def __len__(self) -> int:
        return self.num_frames

    def _object_masks(self, t: int) -> list[tuple[np.ndarray, tuple[int, int, int, int], dict]]:
        import cv2
        out = []
        for obj in self.objects:
            cx, cy = obj["centre"] + obj["amplitude"] * np.sin(obj["omega"] * t + obj["phase"])
            mask = np.zeros((self.height, self.width), np.uint8)
            cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(obj["axes"][0]), int(obj["axes"][1])),
                        obj["angle0"] + obj["spin"] * t, 0, 360, 1, -1)
            out.append((mask, (int(round(cx)), int(round(cy))), obj))
        return out

    def labels(self, t: int) -> np.ndarray:
        """Ground truth of frame ``t``: ``H×W`` uint8 (later objects occlude earlier ones)."""
        label = np.zeros((self.height, self.width), np.uint8)
        for k, (mask, _, _) in enumerate(self._object_masks(t), 1):
            label[mask > 0] = k
        return label

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= int(t) < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1}")
        t = int(t)
        frame = self.background.copy()
        for mask, (cx, cy), obj in self._object_masks(t):
            tex = obj["texture"]
            # tile the object's texture around its centre so it moves with the object
            reps = (self.height // tex.shape[0] + 3, self.width // tex.shape[1] + 3, 1)
            tiled = np.tile(tex, reps)
            oy, ox = tex.shape[0] - cy % tex.shape[0], tex.shape[1] - cx % tex.shape[1]
            tiled = tiled[oy:oy + self.height, ox:ox + self.width]
            frame[mask > 0] = tiled[mask > 0]
        noise = np.random.default_rng([self.seed, t]).integers(-3, 4, size=frame.shape, dtype=np.int16)
        return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def original_layout_bytes(t: int, k: int, nh: int, nw: int) -> dict[str, int]:
    """Memory of the original MiVOS's layout for a clip: float32 images, float32 probabilities and the
    105-frame query-feature buffer (mem_profile 0/1)."""
    cells = (nh // 16) * (nw // 16)
    parts = {"images_float32": t * 3 * nh * nw * 4,
             "probabilities_float32": (k + 1) * t * nh * nw * 4,
             "feature_buffer_105_frames": ORIGINAL_BUFFER_FRAMES * FEATURE_FLOATS_PER_CELL * cells * 4}
    parts["total"] = sum(parts.values())
    return parts


def long_clip_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    from inference_core import InferenceCore
    from util.tensor_util import compute_pad

    mode, device, quiet = cfg["mode"], cfg["device"], cfg["quiet"]
    k, t_len, h, w = cfg["objects"], cfg["frames"], cfg["height"], cfg["width"]
    rss_start = current_rss_bytes()
    clip = ProceduralClip(t_len, w, h, k, cfg["seed"])
    nets = load_networks(Path(cfg["weights"]), device)
    rss_models = current_rss_bytes()
    pad = compute_pad(h, w)
    nh, nw = h + pad[2] + pad[3], w + pad[0] + pad[1]

    core_kw = precision_kwargs(InferenceCore.__init__, mode) or {}
    options = {"mem_profile": cfg["mem_profile"], "prob_storage": cfg["prob_storage"],
               "feature_cache_bytes": int(cfg["feature_cache_mb"] * 2 ** 20)}
    core = InferenceCore(nets["prop"], nets["fusion"], clip, k, mem_freq=cfg["mem_freq"], device=device,
                         **options, **core_kw)
    annotated = cfg["annotated_frame"]
    window = min(cfg["window"], t_len - annotated - 1)
    bar = Progress(f"[long clip {mode}] frames after @{annotated}", quiet)
    frame_times, total = [], 0
    with autocast_context(mode, device, bool(core_kw)):
        gen = core.interact_iter(one_hot(clip.labels(annotated), k), annotated)
        try:
            _sync(device)
            start = time.perf_counter()
            _, total = next(gen)
            bar.total(window)
            for done, _ in gen:
                _sync(device)
                now = time.perf_counter()
                frame_times.append(now - start)
                start = now
                bar.step()
                if done >= window:
                    break
        finally:
            gen.close()  # cancels the rest of the pass; the masks are brought up to date
    bar.finish()
    steady = frame_times[2:] if len(frame_times) > 3 else frame_times
    cells = (nh // 16) * (nw // 16)
    memory_bytes_per_commit = k * MEMORY_FLOATS_PER_CELL * cells * 4
    frames_stored = len(frame_times) + 1
    # bytes the store really keeps per frame (compact storage may drop derivable channels)
    prob_bytes_per_frame = core.prob_bytes // max(frames_stored, 1)
    # what a pass over the whole clip would add on top of the measured peak: the probabilities of the
    # frames not propagated yet, and the memory frames committed every mem_freq frames
    remaining = t_len - frames_stored
    projection = {"probabilities_remaining_frames": remaining * prob_bytes_per_frame,
                  "memory_bank_commits": (remaining // cfg["mem_freq"]) * memory_bytes_per_commit}
    projection["projected_full_pass_peak_rss_bytes"] = peak_rss_bytes() + sum(projection.values())
    return {"mode": mode, "frames": t_len, "objects": k, "size": [w, h], "padded": [nw, nh],
            "options": options, "annotated_frame": annotated, "pass_length": total,
            "frames_propagated": len(frame_times),
            "seconds_per_frame_median": float(np.median(steady)) if steady else None,
            "frame_seconds": frame_times,
            "rss_bytes": {"start": rss_start, "models_loaded": rss_models, "end": current_rss_bytes()},
            "peak_rss_bytes": peak_rss_bytes(),
            "masks_bytes": t_len * nh * nw,
            "projection": projection,
            "original_layout_bytes": original_layout_bytes(t_len, k, nh, nw),
            "target_peak_rss_bytes": LONG_CLIP_TARGET_RSS}


# =============================================================================================================
# parent: run the modes, compare, report
# =============================================================================================================
def run_worker(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one mode in a fresh interpreter; returns its result (raises BenchmarkError on failure)."""
    cfg_path = work / f"{cfg['mode']}_{'long' if cfg['long_clip'] else 'clip'}.json"
    result_path = cfg_path.with_suffix(".result.json")
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cfg["threads"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", str(cfg_path), "--_result", str(result_path)]
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE if cfg["quiet"] else None, text=True)
    if proc.returncode != 0 or not result_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] if cfg["quiet"] else []
        raise BenchmarkError(f"mode {cfg['mode']} failed (exit {proc.returncode})"
                             + (f": {tail[0]}" if tail else "; see the output above"))
    return json.loads(result_path.read_text())


def median_metrics(runs: list[dict[str, float]]) -> dict[str, float | None]:
    return {m: float(np.median([r[m] for r in runs])) if m in runs[0] else None for m in TIME_METRICS}


def speedups(values: dict[str, Any], comparable: bool) -> dict[str, float | None]:
    out = {}
    for m in TIME_METRICS:
        base = BASELINE.get(m)
        out[m] = round(base / values[m], 3) if comparable and base and values.get(m) else None
    return out


def fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_gb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e9:.2f} GB"


def print_table(result: dict[str, Any]) -> None:
    modes = [m for m in result["modes"]]
    rows = [("metric", "original", *[f"{m}" for m in modes])]
    labels = {"round1_s_per_frame": "round 1, s/frame (23 frames)", "round2_s_per_frame": "round 2 fused, s/frame",
              "s2m_s": "S2M scribble, s", "fbrs_click1_s": "f-BRS click 1, s", "fbrs_click2_s": "f-BRS click 2, s",
              "fbrs_click3_s": "f-BRS click 3, s"}
    if result["config"]["frames"] != 24:
        labels["round1_s_per_frame"] = "round 1, s/frame"
    for m in TIME_METRICS:
        cells = []
        for mode in modes:
            r = result["modes"][mode]
            val, sp = r["median"][m], r["speedup_vs_baseline"][m]
            if val is None:
                cells.append("not run")
                continue
            cells.append(fmt_s(val) + (f" ({sp:.2f}×)" if sp else ""))
        rows.append((labels[m], fmt_s(BASELINE[m]), *cells))
    rows.append(("peak RSS", "—", *[fmt_gb(result["modes"][m]["peak_rss_bytes"]) for m in modes]))
    for key in agreement_keys(result["config"]["clicks"]):
        rows.append((f"agreement with fp32: {key}", "—",
                     *[f"{result['modes'][m]['agreement_with_fp32'][key]:.5f}" for m in modes]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(row)))
        if i == 0:
            print(line)
    print(line)
    for mode, reason in result["skipped"].items():
        print(f"skipped {mode}: {reason}")
    for note in result["notes"]:
        print(f"note: {note}")


def print_long_table(result: dict[str, Any]) -> None:
    for mode, r in result["long_clip"].items():
        orig = r["original_layout_bytes"]
        print(f"long clip [{mode}]: {r['frames']} frames {r['size'][0]}×{r['size'][1]}, {r['objects']} objects, "
              f"{r['frames_propagated']} frames propagated from frame {r['annotated_frame']} "
              f"({fmt_s(r['seconds_per_frame_median'])} s/frame after the first two)")
        print(f"  options: {r['options']}")
        print(f"  peak RSS measured: {fmt_gb(r['peak_rss_bytes'])} (models loaded: "
              f"{fmt_gb(r['rss_bytes']['models_loaded'])}); projected at the end of a full pass: "
              f"{fmt_gb(r['projection']['projected_full_pass_peak_rss_bytes'])}; "
              f"target ≤ {fmt_gb(r['target_peak_rss_bytes'])}")
        print(f"  original layout: images {fmt_gb(orig['images_float32'])} + probabilities "
              f"{fmt_gb(orig['probabilities_float32'])} + 105-frame buffer "
              f"{fmt_gb(orig['feature_buffer_105_frames'])}"
              f" = {fmt_gb(orig['total'])}")
    for note in result["notes"]:
        print(f"note: {note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default=None,
                   help="comma-separated modes among fp32,bf16,fp16,orig (orig = float32 through the original's "
                   "compute path, a same-machine baseline) (default: fp32,bf16 on CPU, fp32,fp16 on "
                        "CUDA); fp32 always runs, it is the reference of the agreements")
    p.add_argument("--force-precision", action="store_true",
                   help="run modes the device has no native support for (e.g. emulated bf16): for correctness")
    p.add_argument("--runs", type=int, default=3, help="runs per mode; numbers are medians (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as the baseline)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--frames", type=int, default=None, help="clip length (default 24; 1000 with --long-clip)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="frame size (default 854 480)")
    p.add_argument("--objects", type=int, default=None, help="objects (default 2; 3 with --long-clip)")
    p.add_argument("--mem-freq", type=int, default=5)
    p.add_argument("--clicks", type=int, default=None, choices=(1, 2, 3),
                   help="f-BRS clicks (default 3: positive, positive, negative; 1 with --tiny, as clicks 2-3 "
                        "zoom in to 480 px whatever the frame size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference",
                   help="folder with formula_weights.py (default ../shared/reference); a seeded random "
                        "init is used, with a warning, when it is absent")
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
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return args
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
            raise BenchmarkError(f"{name} must be at least {low}, got {value}")
    if args.precision is None:
        args.precision = "fp32,fp16" if args.device == "cuda" else "fp32,bf16"
    modes = [m.strip().lower() for m in args.precision.split(",") if m.strip()]
    bad = [m for m in modes if m not in PRECISIONS]
    if bad:
        raise BenchmarkError(f"--precision: unknown mode(s) {', '.join(bad)}; use a comma-separated list of "
                             f"{', '.join(PRECISIONS)}")
    args.modes = ["fp32"] + [m for m in dict.fromkeys(modes) if m != "fp32"]
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except BenchmarkError as e:
        print(f"benchmark.py: {e}", file=sys.stderr)
        return 2
    if args._worker:
        cfg = json.loads(args._worker.read_text())
        result = worker_main(cfg)
        args._result.write_text(json.dumps(result))
        return 0
    try:
        return run_benchmark(args)
    except BenchmarkError as e:
        print(f"benchmark.py: {e}", file=sys.stderr)
        return 1


def run_benchmark(args: argparse.Namespace) -> int:
    import torch
    from util.fileio import atomic_write_text
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: no CUDA device is available here; use --device cpu")
    modes, skipped, notes = available_modes(args.modes, args.device, args.force_precision)
    notes.append("timings depend on the machine and its load; compare numbers only from the same machine "
                 "(the baseline is the reference CI machine)")
    load1 = os.getloadavg()[0]
    if load1 > (os.cpu_count() or 1):
        notes.append(f"the machine is busy (load average {load1:.1f} on {os.cpu_count()} CPUs): timings are "
                     f"inflated, more so with several threads (OpenMP threads wait for each other)")
    config = {"frames": args.frames, "width": args.size[0], "height": args.size[1], "objects": args.objects,
              "mem_freq": args.mem_freq, "clicks": args.clicks, "runs": args.runs, "threads": args.threads,
              "device": args.device,
              "precision_requested": args.modes, "seed": args.seed, "tiny": args.tiny, "long_clip": args.long_clip,
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    if args.device == "cuda":
        config["gpu"] = torch.cuda.get_device_name(0)
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
        base_cfg = {"device": args.device, "threads": args.threads, "frames": args.frames, "width": args.size[0],
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


def run_clip(args, base_cfg, modes, work, config, skipped, notes) -> dict[str, Any]:
    results, masks = {}, {}
    for mode in modes:
        log(f"== mode {mode}: {args.runs} run(s) in a fresh process ==", args.quiet)
        cfg = dict(base_cfg, mode=mode, masks_out=str(work / f"{mode}_masks.npz"))
        results[mode] = run_worker(cfg, work)
        with np.load(cfg["masks_out"]) as z:
            masks[mode] = {key: z[key] for key in z.files}
    comparable = all(config[key] == BASELINE["workload"][key] for key in BASELINE["workload"])
    if not comparable:
        notes.append("the workload differs from the baseline's (24 frames 854×480, 2 objects, mem_freq 5): "
                     "no speed-up factors")
    elif args.device != "cpu" or args.threads != 2:
        notes.append("speed-ups compare this device/thread count with the original on the 2-core reference CPU")
    out_modes = {}
    for mode in modes:
        r = results[mode]
        med = median_metrics(r["runs"])
        out_modes[mode] = {
            "precision_via": r["precision_via"], "runs": r["runs"], "median": med,
            "peak_rss_bytes": r["peak_rss_bytes"],
            "speedup_vs_baseline": speedups(med, comparable),
            "agreement_with_fp32": {key: agreement(masks["fp32"][key], masks[mode][key])
                                    for key in agreement_keys(args.clicks)},
            "run_to_run_agreement": r["run_to_run_agreement"],
            "targets": TARGETS["fp32" if mode == "fp32" else "fast"],
        }
    return {"schema": SCHEMA, "config": config, "workload": results["fp32"]["workload"], "baseline": BASELINE,
            "modes": out_modes, "skipped": skipped, "notes": notes}


def run_long_clip(args, base_cfg, modes, work, config, skipped, notes) -> dict[str, Any]:
    out = {}
    annotated = 0
    for mode in modes:
        log(f"== long clip, mode {mode} ==", args.quiet)
        cfg = dict(base_cfg, mode=mode, window=args.window, annotated_frame=annotated,
                   prob_storage=args.prob_storage, feature_cache_mb=args.feature_cache_mb,
                   mem_profile=args.mem_profile)
        out[mode] = run_worker(cfg, work)
    notes.append("frames are generated per index (ProceduralClip), never held as a T×H×W×3 array; the pass is "
                 "stopped after --window frames (interact_iter), the projection adds the probabilities and "
                 "memory-bank commits a full pass would still store")
    config.update({"window": args.window, "prob_storage": args.prob_storage,
                   "feature_cache_mb": args.feature_cache_mb, "mem_profile": args.mem_profile})
    return {"schema": SCHEMA, "config": config, "long_clip": out, "skipped": skipped, "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
