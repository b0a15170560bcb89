"""The davisinteractive 1.0.4 compatibility shim: patches, deterministic robot, registration, offline session."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import util.davis_compat as davis_compat  # noqa: I001  (must precede davisinteractive)
from dataset.synthetic import generate_davis, make_clip
from tests.helpers_davis import load_gt, run_session


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_davis")
    meta = generate_davis(root, num_sequences=2, num_frames=8, size=(160, 120), num_objects=(2, 1), seed=3)
    return root, meta


def test_module_patches_are_present():
    import networkx as nx

    applied = davis_compat.apply()
    assert davis_compat.apply() == applied  # idempotent
    assert set(applied) == {"numpy_aliases", "trapz", "npy_owndata", "networkx", "summarize_report",
                            "robot_medial_axis"}
    assert np.int is int and np.float is float
    assert np.bool is not None and np.trapz(np.array([0.0, 1.0]), x=np.array([0.0, 2.0])) == pytest.approx(1.0)
    assert np.NPY_OWNDATA == 4
    assert callable(nx.from_scipy_sparse_matrix)
    from davisinteractive.evaluation.service import EvaluationService
    from davisinteractive.robot import interactive_robot
    assert getattr(EvaluationService.summarize_report, "_davis_compat", False)
    assert getattr(interactive_robot.medial_axis, "_davis_compat", False)


def test_summarize_report_accepts_object_dtype_report():
    """pandas ≥2/3: an all-object report with a string session_id column must summarise (the typed
    report patch of util/davis_compat.py)."""
    import pandas as pd
    from davisinteractive.evaluation.service import EvaluationService

    with davis_compat.preserved_davis_state({"toy": {"num_frames": 2, "num_objects": 1, "num_scribbles": 1,
                                                     "image_size": [8, 8]}}):
        service = EvaluationService.__new__(EvaluationService)  # only the attributes summarize_report reads
        service.sequences, service.max_t, service.max_i = ["toy"], 30, 2
        service.metric_to_optimize, service.time_threshold, service.avg_nb_objects = "J_AND_F", 60, 1.0
        rows = [["s1", "toy", 1, i, 1, f, 0.5 * i, 0.5 * i, 0.5 * i, 1.0] for i in (1, 2) for f in (0, 1)]
        df = pd.DataFrame(rows, columns=["session_id", "sequence", "scribble_idx", "interaction", "object_id",
                                         "frame", "jaccard", "contour", "j_and_f", "timing"]).astype(object)
        summary = service.summarize_report(df)
    assert summary["curve"]["time"] == [0.0, 1.0, 2.0, 30.0]
    assert summary["curve"]["J_AND_F"] == [0.0, 0.5, 1.0, 1.0]
    assert summary["metric_at_threshold"]["J_AND_F"] == pytest.approx(1.0)
    # trapezoid area: 0.25 + 0.75 + 28 over 30 s
    assert summary["auc"] == pytest.approx(29.0 / 30.0)


def test_robot_is_deterministic():
    from davisinteractive.robot import InteractiveScribblesRobot

    clip = make_clip(num_frames=3, width=96, height=72, num_objects=2, seed=11)
    gt = clip.labels.astype(np.int64)
    pred = np.zeros_like(gt)
    pred[:, :36] = gt[:, :36]  # partially right, so background (negative) strokes appear as well
    pred[:, 40:50, 10:30] = 1
    robot = InteractiveScribblesRobot()
    first = robot.interact("s", pred, gt, nb_objects=2, frame=1)
    second = robot.interact("s", pred, gt, nb_objects=2, frame=1)
    strokes_a, strokes_b = first["scribbles"][1], second["scribbles"][1]
    assert len(strokes_a) > 0 and len(strokes_a) == len(strokes_b)
    for a, b in zip(strokes_a, strokes_b):
        assert a["object_id"] == b["object_id"]
        np.testing.assert_array_equal(np.asarray(a["path"]), np.asarray(b["path"]))


def test_preserved_state_restores_deep_copies():
    from davisinteractive.dataset import Davis

    before_dataset = copy.deepcopy(dict(Davis.dataset))
    before_sets = copy.deepcopy(dict(Davis.sets))
    before_download = Davis.__dict__["_download_scribbles"]
    meta = {"toy-a": {"num_frames": 3, "num_objects": 2, "num_scribbles": 1, "image_size": [16, 8]}}
    with davis_compat.preserved_davis_state(meta) as names:
        assert names == ["toy-a"] and Davis.sets["val"] == ["toy-a"]
        assert Davis.dataset["toy-a"]["image_size"] == [16, 8]
        Davis.dataset["bear"]["num_frames"] = -1  # an in-place change to an existing entry is undone too
        Davis.sets["train"].append("toy-a")
        assert Davis.__dict__["_download_scribbles"] is not before_download
    assert dict(Davis.dataset) == before_dataset and dict(Davis.sets) == before_sets
    assert Davis.__dict__["_download_scribbles"] is before_download


def test_register_rejects_bad_metadata():
    with davis_compat.preserved_davis_state():
        with pytest.raises(ValueError, match="lacks"):
            davis_compat.register_sequences({"x": {"num_frames": 2}})
        with pytest.raises(ValueError, match="trainval"):
            davis_compat.register_sequences({}, subset="trainval")


@pytest.mark.parametrize("missing", ["Scribbles/synth-000/001.json", "Annotations/480p/synth-001/00007.png"])
def test_missing_file_is_a_clear_error_not_a_download(tmp_path, missing):
    from davisinteractive.session import DavisInteractiveSession

    meta = generate_davis(tmp_path / "d", num_sequences=2, num_frames=8, size=(64, 48), num_objects=1, seed=0)
    (tmp_path / "d" / missing).unlink()
    with davis_compat.preserved_davis_state(meta):
        with pytest.raises(davis_compat.DavisDataMissingError) as err:
            with DavisInteractiveSession(host="localhost", user_key="t", davis_root=str(tmp_path / "d"),
                                         subset="val", max_nb_interactions=1, max_time=None,
                                         report_save_dir=str(tmp_path / "r")):
                pass
    assert str(tmp_path / "d" / missing) in str(err.value)


def test_sequence_meta_from_disk_matches_generator(synthetic_root, tmp_path):
    root, meta = synthetic_root
    for seq, m in meta.items():
        on_disk = davis_compat.sequence_meta_from_disk(root, seq)
        assert on_disk == {k: m[k] for k in davis_compat.SEQUENCE_KEYS}
    with pytest.raises(davis_compat.DavisDataMissingError, match="00000.png"):
        davis_compat.sequence_meta_from_disk(tmp_path, "nothing")


def test_oracle_session_scores_one(synthetic_root, tmp_path):
    root, meta = synthetic_root
    gts = {seq: load_gt(root, seq, m["num_frames"]) for seq, m in meta.items()}
    calls = []

    def oracle(seq, scribbles, new):
        assert len(scribbles["scribbles"]) == meta[seq]["num_frames"]
        calls.append((seq, new))
        return gts[seq]

    summary, report = run_session(root, meta, oracle, tmp_path)
    # 2 samples × 8 interactions; the curve starts at (0, 0), so the AUC is 1 minus a sliver of the first step
    assert len(calls) == 16 and sum(new for _, new in calls) == 2
    assert summary["metric_at_threshold"]["J_AND_F"] == pytest.approx(1.0, abs=1e-12)
    assert summary["auc"] == pytest.approx(1.0, abs=1e-3)
    assert np.all(report["j_and_f"].astype(float).to_numpy() == 1.0)
    # one row per (interaction, frame, object): 8 × (8·2 + 8·1)
    assert len(report) == 8 * (8 * 2 + 8 * 1)
    assert json.loads((tmp_path / "summary.json").read_text())["auc"] == pytest.approx(summary["auc"])
    assert sorted(p.suffix for p in tmp_path.glob("result_*")) == [".csv"]


def test_all_zero_session_scores_zero(synthetic_root, tmp_path):
    root, meta = synthetic_root

    def zeros(seq, scribbles, new):
        w, h = meta[seq]["image_size"]
        return np.zeros((meta[seq]["num_frames"], h, w), np.int64)

    summary, report = run_session(root, meta, zeros, tmp_path, max_interactions=2)
    assert summary["auc"] == 0.0
    assert summary["metric_at_threshold"]["J_AND_F"] == 0.0
    assert np.all(report["j_and_f"].astype(float).to_numpy() == 0.0)
