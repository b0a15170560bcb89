"""DAVIS interactive evaluation: DAVISProcessor (rasterisation, S2M inputs, schedule) and the evaluator script,
run offline with the official session + robot on generated DAVIS-layout data and seeded weights (no
segmentation quality: the tests check the protocol, files, bookkeeping and scores' consistency)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import util.davis_compat as davis_compat  # noqa: I001  (before davisinteractive)
import eval_interactive_davis as evaluator
from dataset.synthetic import generate_davis, make_clip
from inference_core.davis_processor import DAVIS_SCHEDULE, DAVISProcessor, interacted_frame
from util.metrics import jaccard
from util.palette import load_mask_png
from util.tensor_util import compute_pad

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval_interactive_davis.py"
# 136×100 pads to 144×112 (both dimensions padded); 9×7 = 63 memory cells ≥ top-k 50 for a one-frame memory
SIZE = (136, 100)
FRAMES = 4


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("davis_synth")
    meta = generate_davis(root, num_sequences=2, num_frames=FRAMES, size=SIZE, num_objects=(2, 1), seed=5)
    return root, meta


@pytest.fixture(scope="module")
def checkpoints(seeded_checkpoints) -> dict[str, Path]:
    """Seeded weights of the three networks, in the official plain-state-dict layout."""
    return {"prop": seeded_checkpoints["propagation_model"], "fusion": seeded_checkpoints["fusion"],
            "s2m": seeded_checkpoints["s2m"]}


def _model_args(checkpoints: dict[str, Path]) -> list[str]:
    return ["--prop_model", str(checkpoints["prop"]), "--fusion_model", str(checkpoints["fusion"]),
            "--s2m_model", str(checkpoints["s2m"])]


def _gt(root: Path, seq: str, n: int) -> np.ndarray:
    return np.stack([load_mask_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png") for t in range(n)])


# ---------------------------------------------------------------------------------------------------------------
# DAVISProcessor with stub networks (fast): rasterisation, S2M inputs, schedule
# ---------------------------------------------------------------------------------------------------------------
class _RecordingS2M(torch.nn.Module):
    """Stands in for S2M: remembers its input and answers "object k = its previous mask" (as logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return (x[:, 3:4] - 0.5) * 20 + (x[:, 4:5] - x[:, 5:6]) * 40


def _stub_processor(num_objects: int = 2, frames: int = 5, size=(136, 100)) -> DAVISProcessor:
    clip = make_clip(frames, size[0], size[1], num_objects, seed=2)
    prop = torch.nn.Identity()  # never called by the tests that use this processor
    return DAVISProcessor(prop, None, _RecordingS2M(), clip.frames, num_objects, device="cpu")


def _scribble(t: int, frame: int, strokes: list[dict]) -> dict:
    scr = [[] for _ in range(t)]
    scr[frame] = strokes
    return {"sequence": "s", "scribbles": scr}


def test_scribbles_are_rasterised_at_the_padded_size_and_stretched():
    proc = _stub_processor()
    w, h = 136, 100
    lw, uw, lh, uh = compute_pad(h, w)
    assert (proc.nh, proc.nw) == (h + lh + uh, w + lw + uw) == (112, 144)
    # a horizontal stroke across the whole normalised width, at mid height, object 1; a point for background
    scribble = _scribble(5, 3, [{"path": [[0.0, 0.5], [1.0, 0.5]], "object_id": 1},
                                {"path": [[0.25, 0.25], [0.25, 0.25]], "object_id": 0}])
    smap, idx = proc.scribble_map(scribble)
    assert idx == 3 and smap.shape == (112, 144)
    row = int(0.5 * (proc.nh - 1))
    # stretched over the pad area: the stroke spans every padded column (0..W'-1), not lw..lw+W-1
    assert (smap[row] == 1).all()
    assert smap[int(0.25 * (proc.nh - 1)), int(0.25 * (proc.nw - 1))] == 0
    assert (smap == -1).sum() == smap.size - proc.nw - 1


def test_s2m_input_follows_the_original_recipe():
    proc = _stub_processor()
    # make the core's mask at frame 2 non-trivial: object 1 on the left, object 2 on the right
    prev = np.zeros((proc.nh, proc.nw), np.uint8)
    prev[10:60, 5:50], prev[30:90, 80:130] = 1, 2
    proc.core.update_mask_only(torch.from_numpy(np.stack([prev == k for k in range(3)])).float().unsqueeze(1), 2)
    scribble = _scribble(5, 2, [{"path": [[0.2, 0.3], [0.3, 0.4]], "object_id": 1},
                                {"path": [[0.7, 0.6], [0.8, 0.6]], "object_id": 2},
                                {"path": [[0.5, 0.1], [0.5, 0.9]], "object_id": 0}])
    mask, idx = proc.to_mask(scribble)
    assert idx == 2 and mask.shape == (3, 1, proc.nh, proc.nw)
    (net_input,) = proc.s2m_net.inputs
    smap, _ = proc.scribble_map(scribble)
    kernel = np.ones((3, 3), np.uint8)
    for k in (1, 2):
        pos = cv2.dilate((smap == k).astype(np.uint8), kernel)
        neg = cv2.dilate(((smap != k) & (smap != -1)).astype(np.uint8), kernel)
        row = net_input[k - 1]
        assert torch.equal(row[:3], proc.core.get_image(2)[0])
        assert np.array_equal(row[3].numpy(), (prev == k).astype(np.float32))
        assert np.array_equal(row[4].numpy(), pos.astype(np.float32))
        assert np.array_equal(row[5].numpy(), neg.astype(np.float32))
    # hard aggregation with background: a one-hot map
    assert torch.equal(mask.sum(0), torch.ones_like(mask[0]))


def test_schedule_propagates_on_interactions_3_6_8(monkeypatch):
    proc = _stub_processor(frames=5)
    calls = []
    monkeypatch.setattr(proc.core, "interact", lambda mask, idx: calls.append(("interact", idx)) or proc.core.np_masks)
    real_update = proc.core.update_mask_only
    monkeypatch.setattr(proc.core, "update_mask_only",
                        lambda mask, idx: calls.append(("update", idx)) or real_update(mask, idx))
    assert DAVIS_SCHEDULE == (2, 5, 7)
    next_frames = []
    for i in range(10):
        frame = i % 5
        masks, nxt, idx = proc.interact(_scribble(5, frame, [{"path": [[0.4, 0.4], [0.6, 0.6]], "object_id": 1}]))
        assert idx == frame and masks.shape == (5, 100, 136) and masks.dtype == np.uint8
        next_frames.append(nxt)
    kinds = [c[0] for c in calls]
    assert kinds == ["update", "update", "interact", "update", "update", "interact", "update", "interact",
                     "interact", "interact"]  # past the original's schedule every interaction propagates
    assert [c[1] for c in calls] == [i % 5 for i in range(10)]
    assert next_frames == [[0], [1], None, [3], [4], None, [1], None, None, None]


def test_update_only_shows_the_s2m_mask_unpadded():
    proc = _stub_processor(frames=3)
    scribble = _scribble(3, 1, [{"path": [[0.1, 0.1], [0.9, 0.9]], "object_id": 2}])
    masks, nxt, idx = proc.interact(scribble)
    assert nxt == [1] and idx == 1
    mask, _ = proc.to_mask(scribble)
    lw, uw, lh, uh = proc.core.pad
    expected = mask.argmax(0)[0, lh:proc.nh - uh, lw:proc.nw - uw].numpy()
    assert np.array_equal(masks[1], expected) and (masks[1] == 2).any()
    assert not masks[0].any() and not masks[2].any()
    # the returned array is a copy, not the core's live view
    masks[1] = 0
    assert proc.core.np_masks[1].any()


def test_empty_scribble_is_accepted_like_the_original():
    proc = _stub_processor(frames=4)
    empty = {"sequence": "s", "scribbles": [[] for _ in range(4)]}
    assert interacted_frame(empty) == 3  # the original's loop index falls through to the last frame
    masks, nxt, idx = proc.interact(empty)
    assert idx == 3 and nxt == [3] and masks.shape == (4, 100, 136)
    (net_input,) = proc.s2m_net.inputs
    assert not net_input[:, 4:].any()  # no strokes at all
    with pytest.raises(ValueError, match="frame entries"):
        proc.interact({"sequence": "s", "scribbles": [[] for _ in range(3)]})


# ---------------------------------------------------------------------------------------------------------------
# the DAVIS layout: root resolution, registration from disk
# ---------------------------------------------------------------------------------------------------------------
def test_root_resolution_and_scan(davis_root, tmp_path):
    root, meta = davis_root
    assert evaluator.resolve_davis_root(root) == root
    official = tmp_path / "2017"
    official.mkdir()
    (official / "trainval").symlink_to(root, target_is_directory=True)
    assert evaluator.resolve_davis_root(official) == official / "trainval"
    with pytest.raises(evaluator.EvalSetupError, match="--davis"):
        evaluator.resolve_davis_root(tmp_path / "nowhere")
    assert evaluator.list_sequences(root, "val") == sorted(meta)
    for seq, info in meta.items():
        scanned = evaluator.scan_sequence(root, seq)
        assert scanned == {k: info[k] for k in ("num_frames", "num_objects", "num_scribbles", "image_size")}
    with pytest.raises(evaluator.EvalSetupError, match="not-there"):
        evaluator.list_sequences(root, "val", ["not-there"])


def test_registration_is_undone_after_a_run(davis_root, tmp_path):
    from davisinteractive.dataset import Davis

    root, meta = davis_root
    before_sets, known = dict(Davis.sets), set(Davis.dataset)
    assert evaluator.main(["--davis", str(root), "--output", str(tmp_path / "o"), "--oracle", "--no_progress",
                           "--max_interactions", "1"]) == 0
    assert dict(Davis.sets) == before_sets and set(Davis.dataset) == known
    assert not set(meta) & set(Davis.dataset)


# ---------------------------------------------------------------------------------------------------------------
# the evaluator end to end
# ---------------------------------------------------------------------------------------------------------------
def _check_outputs(out: Path, meta: dict, max_interactions: int) -> tuple[dict, pd.DataFrame]:
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"auc", "metric_at_threshold", "curve"}
    assert summary["metric_at_threshold"]["threshold"] == 60
    assert 0.0 <= summary["auc"] <= 1.0 and 0.0 <= summary["metric_at_threshold"]["J_AND_F"] <= 1.0
    times, values = summary["curve"]["time"], summary["curve"]["J_AND_F"]
    assert len(times) == len(values) == max_interactions + 2  # (0, 0), one point per interaction, the tail
    assert times[0] == 0.0 and values[0] == 0.0 and np.all(np.diff(times) >= 0)
    # the flat tail ends at avg objects × the sample time limit per object (max_interactions × 30 s by default)
    report = pd.read_csv(out / "report.csv")
    assert list(report.columns) == ["session_id", "sequence", "scribble_idx", "interaction", "object_id", "frame",
                                    "jaccard", "contour", "j_and_f", "timing"]
    rows = sum(info["num_objects"] * info["num_frames"] * info["num_scribbles"] for info in meta.values())
    rows *= max_interactions
    assert len(report) == rows
    assert report["j_and_f"].between(0, 1).all() and (report["timing"] > 0).all()
    assert sorted(report["sequence"].unique()) == sorted(meta)
    official = list(out.glob("result_*.csv"))
    assert len(official) == 1 and not list(out.glob("*.tmp.csv"))
    plot = cv2.imread(str(out / "jf_vs_time.png"))
    assert plot is not None and plot.shape[0] > 100 and plot.shape[1] > 100 and plot.std() > 0
    info = json.loads((out / "run_info.json").read_text())
    assert len(info["interactions"]) == sum(m["num_scribbles"] for m in meta.values()) * max_interactions
    return summary, report


def _check_masks(out: Path, root: Path, meta: dict, equal_gt: bool) -> None:
    for seq, info in meta.items():
        for k in range(info["num_scribbles"]):  # every sample, the last one included
            folder = out / "masks" / str(k) / seq
            files = sorted(folder.glob("*.png"))
            assert [f.name for f in files] == [f"{t:05d}.png" for t in range(info["num_frames"])]
            masks = np.stack([np.asarray(Image.open(f)) for f in files])
            assert Image.open(files[0]).mode == "P"
            assert masks.shape == (info["num_frames"], info["image_size"][1], info["image_size"][0])
            assert masks.max() <= info["num_objects"]
            if equal_gt:
                assert np.array_equal(masks, _gt(root, seq, info["num_frames"]))


def test_oracle_scores_one_and_saves_every_sample(davis_root, tmp_path):
    root, meta = davis_root
    out = tmp_path / "oracle"
    assert evaluator.main(["--davis", str(root), "--output", str(out), "--oracle", "--save_mask",
                           "--no_progress"]) == 0
    summary, report = _check_outputs(out, meta, 8)
    assert summary["metric_at_threshold"]["J_AND_F"] == 1.0
    assert (report["j_and_f"] == 1.0).all() and (report["jaccard"] == 1.0).all()
    # the curve is 1.0 from the first interaction on; only the (0, 0) start keeps the AUC below 1
    assert summary["curve"]["J_AND_F"][1:] == [1.0] * 9 and summary["auc"] > 0.999
    _check_masks(out, root, meta, equal_gt=True)


def test_model_session_writes_summary_report_plot_and_masks(davis_root, checkpoints, tmp_path):
    """A full session with the networks (3 interactions: two S2M-only and one propagation per sample)."""
    root, meta = davis_root
    out = tmp_path / "model"
    argv = ["--davis", str(root), "--output", str(out), "--save_mask", "--no_progress", "--device", "cpu",
            "--max_interactions", "3", "--max_time", "200"] + _model_args(checkpoints)
    assert evaluator.main(argv) == 0
    summary, report = _check_outputs(out, meta, 3)
    assert summary["curve"]["time"][-1] == pytest.approx(600 * np.mean([m["num_objects"] for m in meta.values()]))
    _check_masks(out, root, meta, equal_gt=False)
    info = json.loads((out / "run_info.json").read_text())
    assert [r["propagated"] for r in info["interactions"]] == [False, False, True] * len(meta)
    assert all(r["model_time_s"] > 0 for r in info["interactions"])
    # the final saved masks are the last submission: equal to what the report scored at interaction 3
    for seq, m in meta.items():
        saved = np.stack([load_mask_png(out / "masks" / "0" / seq / f"{t:05d}.png") for t in range(m["num_frames"])])
        j = jaccard(_gt(root, seq, m["num_frames"]), saved, m["num_objects"])  # frames × objects
        rows = report[(report["sequence"] == seq) & (report["interaction"] == 3)].sort_values(["frame", "object_id"])
        np.testing.assert_allclose(rows["jaccard"].to_numpy(), j.reshape(-1), atol=1e-6)


@pytest.mark.slow
def test_model_session_official_protocol(davis_root, checkpoints, tmp_path):
    """8 interactions (propagation + difference-aware fusion on interactions 6 and 8), default time limits."""
    root, meta = davis_root
    out = tmp_path / "full"
    argv = ["--davis", str(root), "--output", str(out), "--no_progress", "--device", "cpu"] + _model_args(checkpoints)
    assert evaluator.main(argv) == 0
    summary, _ = _check_outputs(out, meta, 8)
    assert summary["curve"]["time"][-1] == pytest.approx(240 * np.mean([m["num_objects"] for m in meta.values()]))


# ---------------------------------------------------------------------------------------------------------------
# one-line errors from the script
# ---------------------------------------------------------------------------------------------------------------
def _run_script(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)] + args, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


def test_wrong_davis_path_is_one_line(tmp_path):
    res = _run_script(["--davis", str(tmp_path / "no_davis"), "--output", str(tmp_path / "o")], tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--davis" in lines[0] and "no_davis" in lines[0], res.stderr


def test_missing_checkpoint_is_one_line(davis_root, tmp_path):
    root, _ = davis_root
    missing = tmp_path / "saves" / "nothing.pth"
    res = _run_script(["--davis", str(root), "--output", str(tmp_path / "o"), "--prop_model", str(missing)], tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], res.stderr


def test_bad_sequence_name_is_one_line(davis_root, tmp_path, capsys):
    root, _ = davis_root
    assert evaluator.main(["--davis", str(root), "--output", str(tmp_path / "o"), "--oracle",
                           "--sequences", "synth-000", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
