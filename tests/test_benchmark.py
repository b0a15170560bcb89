"""The benchmark (issue 8) in its tiny CI configuration: every mode runs and the JSON is well formed.

Correctness only: no timed assertions (the CI machine is shared). The bf16 mode is forced so its
agreement with float32 is exercised even on CPUs without native bfloat16.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchmark  # noqa: E402


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmark.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory, reference_dir):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = _run(["--tiny", "--runs", "2", "--precision", "fp32,bf16", "--force-precision", "--quiet",
                 "--reference", str(reference_dir), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_schema_and_modes(tiny_result):
    result, stdout = tiny_result
    assert result["schema"] == benchmark.SCHEMA
    assert result["config"]["weights"] == "formula"
    assert result["config"]["frames"] == 6 and result["config"]["objects"] == 2
    assert set(result["modes"]) == {"fp32", "bf16"}  # every requested mode ran (bf16 forced)
    assert result["skipped"] == {}
    assert result["workload"]["round1_frames"] == 5 and result["workload"]["round2_frames"] == 2
    for mode, r in result["modes"].items():
        assert len(r["runs"]) == 2
        for metric in benchmark.TIME_METRICS:
            assert math.isfinite(r["median"][metric]) and r["median"][metric] > 0
            assert r["median"][metric] == pytest.approx(float(np.median([run[metric] for run in r["runs"]])))
            assert r["speedup_vs_baseline"][metric] is None  # tiny workload: not comparable to the baseline
        assert r["peak_rss_bytes"] > 50 * 2 ** 20
        assert set(r["agreement_with_fp32"]) == set(benchmark.AGREEMENT_KEYS)
        for value in list(r["agreement_with_fp32"].values()) + list(r["run_to_run_agreement"].values()):
            assert 0.0 <= value <= 1.0
    assert result["modes"]["bf16"]["precision_via"]["core"] in ("torch.autocast", "InferenceCore(precision=...)")
    assert "f-BRS click 1" in stdout and "agreement with fp32" in stdout


def test_exact_mode_is_exact(tiny_result):
    result, _ = tiny_result
    fp32 = result["modes"]["fp32"]
    assert all(v == 1.0 for v in fp32["agreement_with_fp32"].values())
    # two runs of the exact path give the same masks
    assert all(v == 1.0 for v in fp32["run_to_run_agreement"].values())


def test_fast_mode_agrees_roughly(tiny_result):
    # with formula weights the bf16 masks stay close to float32 (the 99 % bar is for the full clip)
    result, _ = tiny_result
    bf16 = result["modes"]["bf16"]["agreement_with_fp32"]
    assert min(bf16.values()) > 0.5


def test_long_clip_tiny(tmp_path, reference_dir):
    out = tmp_path / "long.json"
    proc = _run(["--long-clip", "--tiny", "--quiet", "--precision", "fp32", "--reference", str(reference_dir),
                 "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())["long_clip"]["fp32"]
    assert r["frames"] == 40 and r["frames_propagated"] == 3 and r["pass_length"] == 39
    assert r["options"]["prob_storage"] == "uint16"
    assert r["peak_rss_bytes"] <= r["projection"]["projected_full_pass_peak_rss_bytes"]
    orig = r["original_layout_bytes"]
    assert orig["total"] == orig["images_float32"] + orig["probabilities_float32"] + orig["feature_buffer_105_frames"]


def test_original_layout_estimate_matches_issue():
    # issue 8: 1000 frames 480p, 3 objects → images 5 GB, probabilities 6.6 GB, 105-frame buffer 5 GB ≈ 17 GB
    est = benchmark.original_layout_bytes(1000, 3, 480, 864)
    assert est["images_float32"] / 1e9 == pytest.approx(4.98, abs=0.01)
    assert est["probabilities_float32"] / 1e9 == pytest.approx(6.64, abs=0.01)
    assert 5.0 < est["feature_buffer_105_frames"] / 1e9 < 5.5
    assert 16.5 < est["total"] / 1e9 < 17.2


def test_procedural_clip_is_lazy_and_deterministic():
    clip = benchmark.ProceduralClip(1000, 854, 480, 3, seed=0)
    again = benchmark.ProceduralClip(1000, 854, 480, 3, seed=0)
    assert len(clip) == 1000
    frame = clip[737]
    assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, again[737])
    labels = clip.labels(737)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels > 0).any()
    assert not np.array_equal(clip.labels(0), clip.labels(30))  # objects move


def test_workload_helpers():
    labels = np.zeros((64, 80), np.uint8)
    labels[10:30, 10:30] = 1
    labels[35:60, 40:75] = 2
    scribbles = benchmark.make_scribbles(labels, 2)
    for k in (1, 2):
        assert ((scribbles == k) & (labels == k)).any() and not ((scribbles == k) & (labels != k)).any()
    assert not ((scribbles == 0) & (labels != 0)).any()
    clicks = benchmark.fbrs_clicks(labels)
    assert [c[2] for c in clicks] == [True, True, False]
    assert labels[clicks[0][1], clicks[0][0]] == 1 and labels[clicks[1][1], clicks[1][0]] == 1
    assert labels[clicks[2][1], clicks[2][0]] == 0
    spoiled = benchmark.spoil_labels(labels, 2, seed=0)
    assert spoiled.shape == labels.shape and (spoiled != labels).any()


def test_bad_arguments_one_line():
    proc = _run(["--precision", "fp64"])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--precision" in proc.stderr
