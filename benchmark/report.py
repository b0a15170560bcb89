"""What the benchmark reports: the schema, the recorded numbers of the original MiVOS, medians, speed-ups
and the printed tables."""
from __future__ import annotations

from typing import Any

import numpy as np

SCHEMA = "fastermivos-benchmark/1"
ROUND_METRICS = ("round1_s_per_frame", "round2_s_per_frame")
TIME_METRICS = ROUND_METRICS + ("s2m_s", "fbrs_click1_s", "fbrs_click2_s", "fbrs_click3_s")
AGREEMENT_KEYS = ("round1", "round2", "s2m", "fbrs_click1", "fbrs_click2", "fbrs_click3")

# The original MiVOS measured on a 2-core CPU with AVX-512 BF16 (no GPU), formula weights, float32,
# 2 threads, median of 3 runs, on this workload at its default size.
BASELINE: dict[str, Any] = {
    "source": "original MiVOS on a 2-core CPU with AVX-512 BF16 (no GPU), formula weights, float32, 2 threads, "
              "median of 3 runs",
    "workload": {"frames": 24, "width": 854, "height": 480, "objects": 2, "mem_freq": 5},
    "round1_s_per_frame": 4.10,   # 94.4 s / 23 frames
    "round2_s_per_frame": 5.29,   # 58.2 s / 11 frames (fusion)
    "s2m_s": 2.11,
    "fbrs_click1_s": 4.23,
    "fbrs_click2_s": 1.50,
    "fbrs_click3_s": None,        # not recorded
    "peak_rss_bytes": None,       # not recorded for this workload
}
# Speed targets (seconds) of the project on that machine; reported next to the numbers, never asserted.
TARGETS = {"fp32": {"round1_s_per_frame": 2.9, "round2_s_per_frame": 3.5, "fbrs_click1_s": 2.0},
           "fast": {"round1_s_per_frame": 1.6}}
LONG_CLIP_TARGET_RSS = 5e9


def median_metrics(runs: list[dict[str, float]]) -> dict[str, float | None]:
    return {m: float(np.median([r[m] for r in runs])) if m in runs[0] else None for m in TIME_METRICS}


def speedups(values: dict[str, Any], comparable: bool) -> dict[str, float | None]:
    out = {}
    for m in TIME_METRICS:
        base = BASELINE.get(m)
        out[m] = round(base / values[m], 3) if comparable and base and values.get(m) else None
    return out


def flops_ratios(orig: dict[str, float] | None, mode: dict[str, float] | None) -> dict[str, float | None]:
    """Per metric, the original path's floating-point operations over a mode's (None where either is
    missing or zero)."""
    orig, mode = orig or {}, mode or {}
    return {m: round(orig[m] / mode[m], 3) if orig.get(m) and mode.get(m) else None for m in TIME_METRICS}


def fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_gb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e9:.2f} GB"


def time_metrics(clicks: int) -> tuple[str, ...]:
    """The timed metrics of a run with ``clicks`` f-BRS clicks."""
    return ROUND_METRICS + ("s2m_s",) + tuple(f"fbrs_click{i}_s" for i in range(1, clicks + 1))


def agreement_keys(clicks: int) -> tuple[str, ...]:
    """The results compared with fp32 in a run with ``clicks`` f-BRS clicks."""
    return AGREEMENT_KEYS[:3 + clicks]


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
    if any(result["modes"][m].get("flops") for m in modes):
        for m in TIME_METRICS:
            cells = []
            for mode in modes:
                r = result["modes"][mode]
                count = (r.get("flops") or {}).get(m)
                ratio = (r.get("flops_ratio_vs_orig") or {}).get(m)
                cells.append("—" if count is None else f"{count / 1e9:.1f}" + (f" (orig: {ratio:.2f}×)" if ratio else ""))
            rows.append((labels[m].split(",")[0] + ", GFLOP" + ("/frame" if m in ROUND_METRICS else ""), "—", *cells))
    rows.append(("peak RSS", "—", *[fmt_gb(result["modes"][m]["peak_rss_bytes"]) for m in modes]))
    if any(result["modes"][m].get("gpu_peak_allocated_bytes") is not None for m in modes):
        rows.append(("peak GPU memory (allocated)", "—",
                     *[fmt_gb(result["modes"][m].get("gpu_peak_allocated_bytes") or 0) for m in modes]))
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
    for mode in modes:
        if result["modes"][mode].get("allocator"):
            print(f"{mode} memory: {result['modes'][mode]['allocator']}")
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
        bank, proj = r["memory_bank"], r["projection"]
        print(f"  pass time: {r['pass_seconds']:.0f} s; probabilities in memory at the end "
              f"{fmt_gb(r['prob_bytes_in_memory'])}, spilled to disk {fmt_gb(r['prob_bytes_spilled'])}")
        print(f"  memory-bank values in memory {fmt_gb(bank['value_bytes_in_memory'])} (at most "
              f"{fmt_gb(bank['value_ram_capacity_bytes'])}), spilled to disk {fmt_gb(bank['value_bytes_spilled'])}"
              f"{'; spilled before the end of a full pass' if bank['values_spilled_by_end_of_pass'] else ''}")
        print(f"  peak RSS measured: {fmt_gb(r['peak_rss_bytes'])} (models loaded: "
              f"{fmt_gb(r['rss_bytes']['models_loaded'])}); projected at the end of a full pass: "
              f"{fmt_gb(proj['projected_full_pass_peak_rss_bytes'])}; "
              f"target ≤ {fmt_gb(r['target_peak_rss_bytes'])}")
        print(f"  projection adds: probabilities {fmt_gb(proj['probabilities_remaining_frames'])}, hard masks "
              f"{fmt_gb(proj['masks_remaining_frames'])}, memory keys {fmt_gb(proj['memory_bank_keys'])}, "
              f"memory values in RAM {fmt_gb(proj['memory_bank_values_in_ram'])}, readout transient growth "
              f"{fmt_gb(proj['readout_transient_growth'])}")
        print(f"  original layout: images {fmt_gb(orig['images_float32'])} + probabilities "
              f"{fmt_gb(orig['probabilities_float32'])} + 105-frame buffer "
              f"{fmt_gb(orig['feature_buffer_105_frames'])}"
              f" = {fmt_gb(orig['total'])}")
    for note in result["notes"]:
        print(f"note: {note}")

