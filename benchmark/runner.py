"""Running the workload: one precision mode per worker process (so peak RSS is per mode), and the parent
side that starts a worker and reads its result."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from benchmark.errors import BenchmarkError
from benchmark.modes import autocast_context, precision_kwargs
from benchmark.original_path import OriginalPath, label_every_frame, original_s2m
from benchmark.report import LONG_CLIP_TARGET_RSS, agreement_keys, time_metrics
from benchmark.weights import load_networks
from benchmark.workload import (KEY_FLOATS_PER_CELL, MEMORY_FLOATS_PER_CELL, TOP_K, ProceduralClip, agreement, fbrs_clicks, one_hot,
                                original_layout_bytes, make_scribbles, spoil_labels)
from dataset.synthetic import make_clip
from inference_core import InferenceCore
from inference_core.interaction.fbrs_controller import FBRSController
from inference_core.interaction.s2m_controller import S2MController
from model.aggregate import aggregate_wbg, hard_labels
from model.propagation.memory import top_k_readout_scratch_bytes
from util.memory import (HUGE_PAGES_ENV, current_rss_bytes, huge_pages_active, keep_default_heap,
                         heap_policy, peak_rss_bytes)
from util.tensor_util import compute_pad, unpad

ROOT = Path(__file__).resolve().parents[1]


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





def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def allocator_description() -> str:
    """How this process gets its tensor memory (the report's "allocator" line of a mode)."""
    pages = "huge pages" if huge_pages_active() else "4 KiB pages"
    return f"{pages}, {heap_policy()}"


def worker_main(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one mode (the worker process's whole job) and return its result."""
    torch.set_num_threads(cfg["threads"])
    if cfg["mode"] == "orig":
        # the original's process: glibc's default heap policy (its parent also turned off huge pages)
        keep_default_heap()
    if cfg["long_clip"]:
        return long_clip_worker(cfg)
    return clip_worker(cfg)


class StepTimer:
    """Wall-clock seconds of each workload step (device synchronised before and after)."""

    def __init__(self, device: str):
        self.device, self.values = device, {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        _sync(self.device)
        start = time.perf_counter()
        yield
        _sync(self.device)
        self.values[name] = time.perf_counter() - start


class StepFlopCounter:
    """Floating-point operations of each workload step (``torch.utils.flop_counter``: convolutions and
    matrix products, the arithmetic that bounds a step's time), counted in an untimed run."""

    def __init__(self):
        self.values = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.values[name] = float(counter.get_total_flops())


def clip_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """The timed workload: two interaction rounds, one S2M interaction, up to three f-BRS clicks
    (``cfg["flops"]``: one more, untimed run that counts each step's arithmetic)."""
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
    fbrs_fp32 = False

    def workload(measure: StepTimer | StepFlopCounter, tag: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """One run of the whole workload; ``measure.step(name)`` wraps each step. Returns the per-step
        values (per frame for the rounds) and the masks compared between modes."""
        nonlocal fbrs_fp32
        values: dict[str, float] = {}
        masks: dict[str, np.ndarray] = {}
        core = InferenceCore(prop_net, nets["fusion"], clip.frames, k, mem_profile=0,
                             mem_freq=cfg["mem_freq"], device=device, **(core_kw or {}))
        for name, idx, mask in (("round1", first_idx, round1_mask), ("round2", second_idx, round2_mask)):
            backward, forward = core.pass_bounds(idx)
            n_frames = forward - backward - 2
            bar = Progress(f"{tag} {name} @{idx}", quiet)
            with autocast_context(mode, device, core_kw is not None), measure.step(name):
                core.interact(mask, idx, bar.total, bar.step)
                labels = label_every_frame(core) if mode == "orig" else core.np_masks.copy()
            bar.finish()
            values[f"{name}_s"] = measure.values[name]
            values[f"{name}_frames"] = n_frames
            values[f"{name}_s_per_frame"] = measure.values[name] / max(n_frames, 1)
            masks[name] = labels

        # S2M: one scribble interaction on a frame, all objects (the GUI's controller + aggregation)
        s2m = S2MController(nets["s2m"], k, ignore_class=255, device=device, **(s2m_kw or {}))
        image, prev = core.get_image(s2m_idx), core.get_mask(s2m_idx)
        with torch.inference_mode(), autocast_context(mode, device, s2m_kw is not None), measure.step("s2m"):
            prob = aggregate_wbg(original_s2m(nets["s2m"], image, prev, scribbles, k) if mode == "orig"
                                 else s2m.interact(image, prev, scribbles), keep_bg=True)
            # the original shows the result through update_mask_only: torch.argmax
            labels = (torch.argmax(prob, dim=0) if mode == "orig" else hard_labels(prob))[0]
        values["s2m_s"] = measure.values["s2m"]
        masks["s2m"] = unpad(labels.cpu().numpy().astype(np.uint8), pad)

        # f-BRS: up to three clicks on one object (the first click starts the session)
        image = core.get_image(fbrs_idx)
        try:
            fbrs_values, fbrs_masks = run_fbrs(nets["fbrs"], image, clicks, pad, mode, device, fbrs_kw,
                                               use_autocast=not fbrs_fp32, measure=measure)
        except (TypeError, RuntimeError) as e:
            if mode in ("fp32", "orig") or fbrs_kw is not None or fbrs_fp32:
                raise
            # autocast reaches code that cannot take a reduced-precision tensor: measure f-BRS in float32
            fbrs_fp32 = True
            via["fbrs"] = f"float32 (autocast failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
            log(f"{tag} f-BRS under autocast failed ({e}); f-BRS runs in float32 in this mode", quiet)
            fbrs_values, fbrs_masks = run_fbrs(nets["fbrs"], image, clicks, pad, mode, device, fbrs_kw,
                                               use_autocast=False, measure=measure)
        values.update(fbrs_values)
        masks.update(fbrs_masks)
        del core, s2m
        return values, masks

    keys = agreement_keys(len(clicks))
    runs, first_masks, run_agreement = [], None, {key: 1.0 for key in keys}
    for run in range(cfg["runs"]):
        tag = f"[{mode} run {run + 1}/{cfg['runs']}]"
        timings, masks = workload(StepTimer(device), tag)
        log(f"{tag} " + ", ".join(f"{m} {timings[m]:.3f}" for m in time_metrics(len(clicks))), quiet)
        runs.append(timings)
        if first_masks is None:
            first_masks = masks
        else:
            for key in keys:
                run_agreement[key] = min(run_agreement[key], agreement(first_masks[key], masks[key]))
    flops = None
    if cfg.get("flops"):
        counted, _ = workload(StepFlopCounter(), f"[{mode} arithmetic]")
        # the same keys as the timings: floating-point operations per frame (rounds) or per step
        flops = {m: counted[m] for m in time_metrics(len(clicks))}
        log(f"[{mode} arithmetic] " + ", ".join(f"{m} {flops[m] / 1e9:.1f} GFLOP" for m in flops), quiet)

    np.savez_compressed(cfg["masks_out"], **first_masks)
    # on a GPU the memory that matters is the device's: the peak of the allocator (each mode runs in its
    # own process, so the peak is this mode's)
    gpu_peak = torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else None
    return {"mode": mode, "precision_via": via, "allocator": allocator_description(), "runs": runs,
            "flops": flops,
            "peak_rss_bytes": peak_rss_bytes(),
            "gpu_peak_allocated_bytes": gpu_peak,
            "run_to_run_agreement": run_agreement,
            "workload": {"round1_frame": first_idx, "round2_frame": second_idx, "s2m_frame": s2m_idx,
                         "fbrs_frame": fbrs_idx, "fbrs_clicks_xy_positive": [list(c) for c in clicks],
                         "round1_frames": runs[0]["round1_frames"], "round2_frames": runs[0]["round2_frames"]}}


def run_fbrs(net, image, clicks, pad, mode: str, device: str, fbrs_kw: dict | None,
             use_autocast: bool, measure: StepTimer | StepFlopCounter) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The clicks through a fresh FBRSController: per-click value of ``measure`` and binary mask (un-padded)."""
    fbrs = FBRSController(net, device=device, **(fbrs_kw or {}))
    values, masks = {}, {}
    for i, (x, y, positive) in enumerate(clicks, 1):
        name = f"fbrs_click{i}"
        with autocast_context(mode, device, fbrs_kw is not None or not use_autocast), measure.step(name):
            out = fbrs.interact(image, float(x + pad[0]), float(y + pad[2]), positive)
        values[f"{name}_s"] = measure.values[name]
        masks[name] = unpad((out[0, 0] > 0.5).float().cpu().numpy().astype(np.uint8), pad)
    return values, masks



def long_clip_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Memory of one pass over a lazily generated long clip, stopped after ``window`` frames."""
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
    if cfg.get("prob_spill_dir"):
        options.update(prob_spill_dir=cfg["prob_spill_dir"], prob_ram_bytes=int(cfg["prob_ram_mb"] * 2 ** 20))
    if cfg.get("prob_spill_dir") and cfg.get("memory_ram_mb") is not None:
        # the memory bank spills to the same folder
        options.update(memory_spill_dir=cfg["prob_spill_dir"], memory_ram_bytes=int(cfg["memory_ram_mb"] * 2 ** 20))
    core = InferenceCore(nets["prop"], nets["fusion"], clip, k, mem_freq=cfg["mem_freq"], device=device,
                         **options, **core_kw)
    annotated = cfg["annotated_frame"]
    window = min(cfg["window"], t_len - annotated - 1)
    bar = Progress(f"[long clip {mode}] frames after @{annotated}", quiet)
    frame_times, rss_trace, total = [], [], 0
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
                rss_trace.append(current_rss_bytes())    # the whole pass's curve, not just its peak
                start = now
                bar.step()
                if done >= window:
                    break
        finally:
            gen.close()  # cancels the rest of the pass; the masks are brought up to date
    bar.finish()
    steady = frame_times[2:] if len(frame_times) > 3 else frame_times
    cells = (nh // 16) * (nw // 16)
    key_bytes_per_commit = k * KEY_FLOATS_PER_CELL * cells * 4
    value_bytes_per_commit = k * (MEMORY_FLOATS_PER_CELL - KEY_FLOATS_PER_CELL) * cells * 4
    frames_stored = len(frame_times) + 1
    # bytes the store really keeps per frame (compact storage may drop derivable channels)
    prob_bytes_per_frame = core.prob_bytes // max(frames_stored, 1)
    # what a pass over the whole clip would add on top of the measured peak
    remaining = t_len - frames_stored
    remaining_prob_bytes = remaining * prob_bytes_per_frame
    if "prob_ram_bytes" in options:   # spilled beyond the budget: memory grows only up to it
        remaining_prob_bytes = max(0, min(remaining_prob_bytes, options["prob_ram_bytes"] - core.prob_bytes))
    pass_frames = range(annotated + 1, t_len)
    commits_now = len(frame_times) // cfg["mem_freq"]
    commits_end = len(pass_frames) // cfg["mem_freq"]
    remaining_commits = max(0, commits_end - commits_now)
    # memory-bank values: every commit until the bank's RAM part is full (with a spill folder), the
    # rest go to the file; keys always stay in memory
    value_growth = min(remaining_commits * value_bytes_per_commit,
                       max(0, core.memory_value_capacity_bytes - core.memory_value_bytes))
    # the top-k readout's transient scratch depends on the memory length (and on whether it reads spilled
    # rows); the measured peak holds the one of the window's memory, the projection adds its growth
    n_now = (1 + commits_now + 1) * cells           # the interaction, the commits, the temporary slot
    n_end = (1 + commits_end + 1) * cells
    spills_end = core.memory_value_capacity_bytes < (1 + commits_end + 1) * value_bytes_per_commit
    cv = MEMORY_FLOATS_PER_CELL - KEY_FLOATS_PER_CELL
    top_k = getattr(core.prop_net, "top_k", None) or TOP_K
    scratch_now = top_k_readout_scratch_bytes(n_now, cells, cv, top_k, row_source=core.memory_disk_bytes > 0)
    scratch_end = top_k_readout_scratch_bytes(n_end, cells, cv, top_k, row_source=spills_end)
    projection = {"probabilities_remaining_frames": remaining_prob_bytes,
                  "masks_remaining_frames": remaining * nh * nw,
                  "memory_bank_keys": remaining_commits * key_bytes_per_commit,
                  "memory_bank_values_in_ram": value_growth,
                  "readout_transient_growth": max(0, scratch_end - scratch_now)}
    projection["projected_full_pass_peak_rss_bytes"] = peak_rss_bytes() + sum(projection.values())
    memory_bank = {"value_bytes_in_memory": core.memory_value_bytes,
                   "value_bytes_spilled": core.memory_disk_bytes,
                   "value_ram_capacity_bytes": core.memory_value_capacity_bytes,
                   "values_spilled_by_end_of_pass": bool(spills_end),
                   "readout_scratch_bytes": {"window": scratch_now, "end_of_pass": scratch_end}}
    return {"mode": mode, "frames": t_len, "objects": k, "size": [w, h], "padded": [nw, nh],
            "options": options, "annotated_frame": annotated, "pass_length": total,
            "frames_propagated": len(frame_times),
            "seconds_per_frame_median": float(np.median(steady)) if steady else None,
            "frame_seconds": frame_times,
            "rss_bytes_per_frame": rss_trace,
            "pass_seconds": float(sum(frame_times)),
            "prob_bytes_in_memory": core.prob_bytes,
            "prob_bytes_spilled": core.prob_disk_bytes,
            "memory_bank": memory_bank,
            "rss_bytes": {"start": rss_start, "models_loaded": rss_models, "end": current_rss_bytes()},
            "peak_rss_bytes": peak_rss_bytes(),
            "gpu_peak_allocated_bytes": (torch.cuda.max_memory_allocated(device)
                                         if torch.device(device).type == "cuda" else None),
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
    if cfg["mode"] == "orig":
        env[HUGE_PAGES_ENV] = "0"   # PyTorch's default CPU allocator, as the original code runs
    # the package's own entry point, from the project root (whatever the caller's working folder)
    cmd = [sys.executable, "-m", "benchmark", "--_worker", str(cfg_path), "--_result", str(result_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE if cfg["quiet"] else None, text=True)
    if proc.returncode != 0 or not result_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] if cfg["quiet"] else []
        raise BenchmarkError(f"mode {cfg['mode']} failed (exit {proc.returncode})"
                             + (f": {tail[0]}" if tail else "; see the output above"))
    return json.loads(result_path.read_text())

