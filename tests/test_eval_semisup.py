"""Semi-supervised evaluation: eval_davis.py (2017 + 2016), eval_youtube.py, the metric path, KM read.

Seeded weights (deterministic, not trained), so the masks are not good; the tests check the protocol:
files, layout, ids, the J&F summary and its oracle values, and invariants of the propagation.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval_davis
import eval_youtube
from dataset.synthetic import generate_davis
from tests.helpers_semisup import write_youtube_layout
from util.palette import load_mask_png

# 128×112 → 8×7 = 56 memory positions per frame: enough for the top-50 read
SIZE = (128, 112)
FRAMES = 4


@pytest.fixture(scope="module")
def prop_checkpoint(seeded_checkpoints) -> Path:
    return seeded_checkpoints["propagation_model"]


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("davis")
    meta = generate_davis(root, num_sequences=2, num_frames=FRAMES, size=SIZE, num_objects=(2, 1), seed=5)
    return root, meta


@pytest.fixture(scope="module")
def davis17_run(prop_checkpoint, davis_root, tmp_path_factory):
    root, meta = davis_root
    out = tmp_path_factory.mktemp("out17")
    rc = eval_davis.main(["--model", str(prop_checkpoint), "--davis", str(root), "--output", str(out),
                          "--num_workers", "0", "--device", "cpu"])
    return rc, out


def test_eval_davis_2017_writes_masks_and_summary(davis17_run, davis_root, capsys):
    rc, out = davis17_run
    root, meta = davis_root
    assert rc == 0
    n_objects = 0
    for seq, m in meta.items():
        files = sorted((out / seq).glob("*.png"))
        assert [f.name for f in files] == [f"{t:05d}.png" for t in range(m["num_frames"])]
        for f in files:
            im = Image.open(f)
            assert im.mode == "P" and im.size == tuple(m["image_size"])
            assert set(np.unique(np.asarray(im))) <= set(range(m["num_objects"] + 1))
        # frame 0 is the given mask (argmax of the aggregated one-hot)
        np.testing.assert_array_equal(load_mask_png(files[0]),
                                      load_mask_png(root / "Annotations" / "480p" / seq / "00000.png"))
        n_objects += m["num_objects"]

    lines = (out / "global_results-val.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["J&F-Mean", "J-Mean", "J-Recall"]
    values = dict(zip(lines[0].split(","), map(float, lines[1].split(","))))
    assert values["J&F-Mean"] == pytest.approx((values["J-Mean"] + values["F-Mean"]) / 2, abs=1e-6)
    per_seq = (out / "per-sequence_results-val.csv").read_text().splitlines()
    assert per_seq[0] == "Sequence,J-Mean,F-Mean" and len(per_seq) == 1 + n_objects
    doc = json.loads((out / "scores.json").read_text())
    assert doc["global"]["objects"] == n_objects and 0.0 <= doc["global"]["J&F-Mean"] <= 1.0
    assert doc["timing"]["frames"] == sum(m["num_frames"] for m in meta.values())

    # re-scoring the written folder gives the same numbers as the in-memory scores
    scores = eval_davis.score_folder(out, root / "Annotations" / "480p", sorted(meta))
    assert eval_davis.summarise(scores)["J&F-Mean"] == pytest.approx(doc["global"]["J&F-Mean"], abs=1e-9)


def test_eval_davis_2016_single_object_grey_pngs(prop_checkpoint, davis_root, tmp_path, capfd):
    root, meta = davis_root
    rc = eval_davis.main(["--model", str(prop_checkpoint), "--davis", str(root), "--output", str(tmp_path),
                          "--davis16", "--no_top", "--num_workers", "0", "--device", "cpu", "--video", "synth-000"])
    assert rc == 0
    assert "FPS" in capfd.readouterr().out
    assert not (tmp_path / "synth-001").exists()
    for seq, m in [("synth-000", meta["synth-000"])]:
        files = sorted((tmp_path / seq).glob("*.png"))
        assert len(files) == m["num_frames"]
        im = Image.open(files[0])
        assert im.mode == "L"
        gt0 = load_mask_png(root / "Annotations" / "480p" / seq / "00000.png") > 0
        np.testing.assert_array_equal(np.asarray(im), gt0.astype(np.uint8) * 255)
        for f in files:
            assert set(np.unique(np.asarray(Image.open(f)))) <= {0, 255}
    doc = json.loads((tmp_path / "scores.json").read_text())
    assert doc["split"] == "2016-val" and doc["global"]["objects"] == 1


def test_metric_oracle_ground_truth_and_empty(davis_root, tmp_path):
    """Ground truth as the result → J&F 1; empty results → 0 where every object is in every frame."""
    root, meta = davis_root
    ann = root / "Annotations" / "480p"
    videos = sorted(meta)
    perfect = eval_davis.summarise(eval_davis.score_folder(ann, ann, videos))
    assert perfect["J&F-Mean"] == 1.0 and perfect["J-Mean"] == 1.0 and perfect["F-Mean"] == 1.0

    empty_dir = tmp_path / "empty"
    for seq in videos:
        for f in (ann / seq).glob("*.png"):
            (empty_dir / seq).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros_like(load_mask_png(f)), mode="L").save(empty_dir / seq / f.name)
    scores = eval_davis.score_folder(empty_dir, ann, videos)
    absent = []
    for seq, s in scores.items():
        gt = np.stack([load_mask_png(ann / seq / f"{t:05d}.png") for t in range(1, meta[seq]["num_frames"] - 1)])
        present = np.stack([(gt == k + 1).any(axis=(1, 2)) for k in range(meta[seq]["num_objects"])], 1)
        # absent objects score 1 (empty vs empty), present ones 0: the mean is the absent fraction
        np.testing.assert_allclose(s.J_mean, 1 - present.mean(axis=0))
        np.testing.assert_allclose(s.F_mean, 1 - present.mean(axis=0))
        absent.extend(1 - present.mean(axis=0))
    # the global number is the mean over every object of every video (0 when all are always present)
    summary = eval_davis.summarise(scores)
    assert summary["objects"] == sum(meta[seq]["num_objects"] for seq in videos) == len(absent)
    assert summary["J&F-Mean"] == pytest.approx(float(np.mean(absent)))
    assert summary["J&F-Mean"] < 1.0

    # the CLI route: --score_only on a copy of the ground truth
    copy = tmp_path / "copy"
    shutil.copytree(ann, copy)
    assert eval_davis.main(["--davis", str(root), "--output", str(copy), "--score_only"]) == 0
    assert json.loads((copy / "scores.json").read_text())["global"]["J&F-Mean"] == 1.0


def test_eval_davis_bad_inputs(prop_checkpoint, davis_root, tmp_path, capsys):
    root, _ = davis_root
    assert eval_davis.main(["--model", str(prop_checkpoint), "--davis", str(tmp_path / "nowhere"),
                            "--output", str(tmp_path / "o"), "--num_workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "nowhere" in err
    assert eval_davis.main(["--model", str(tmp_path / "missing.pth"), "--davis", str(root),
                            "--output", str(tmp_path / "o"), "--num_workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.pth" in err and "\n" not in err


def test_eval_youtube_late_objects_and_ids(prop_checkpoint, tmp_path, capfd):
    ids, late = (2, 5, 9), 2
    data = write_youtube_layout(tmp_path / "yv", num_frames=FRAMES, size=SIZE, ids=ids, late_frame=late)
    out = tmp_path / "out"
    rc = eval_youtube.main(["--model", str(prop_checkpoint), "--yv", str(tmp_path / "yv"), "--output", str(out),
                            "--num_workers", "0", "--device", "cpu", "--short_side", str(SIZE[1])])
    assert rc == 0 and "FPS" in capfd.readouterr().out
    files = sorted((out / "vid0").glob("*.png"))
    assert [f.stem for f in files] == data["names"]       # original frame names, from the first annotated frame
    masks = [load_mask_png(f) for f in files]
    assert all(m.shape == (SIZE[1], SIZE[0]) for m in masks)
    assert all(set(np.unique(m)) <= {0, *ids} for m in masks)
    first = data["labels"][0].copy()
    first[first == ids[2]] = 0
    np.testing.assert_array_equal(masks[0], first)
    # the late object does not exist before its annotation; at its first frame its annotation wins
    assert all(not (m == ids[2]).any() for m in masks[:late])
    np.testing.assert_array_equal(masks[late] == ids[2], data["labels"][late] == ids[2])


def test_per_object_propagation_equals_core_when_all_objects_start_together(seeded_prop_net):
    """With every object annotated at frame 0, the YouTube runner is the DAVIS propagation."""
    from dataset.synthetic import make_clip
    from inference_core.core import InferenceCore
    from inference_core.semisup import PerObjectPropagation, first_frame_probabilities, propagate_first_frame

    net = seeded_prop_net
    clip = make_clip(num_frames=FRAMES, width=SIZE[0], height=SIZE[1], num_objects=2, seed=2)
    onehot = torch.from_numpy(np.stack([clip.labels[0] == k for k in (1, 2)])).float().unsqueeze(1)
    core = InferenceCore(net, None, clip.frames, 2, mem_freq=2, device="cpu")
    with torch.inference_mode():
        for _ in propagate_first_frame(core, onehot):
            pass
        runner = PerObjectPropagation(net, clip.frames, 2, mem_freq=2, device="cpu")
        runner.interact(first_frame_probabilities(onehot).round(), 0, clip.num_frames, [1, 2])
    for t in range(clip.num_frames):
        d = (core.get_prob(t) - runner.get_prob(t)).abs().max().item()
        assert d < 1e-4, f"frame {t}: max abs diff {d}"


def test_kernelised_memory_read():
    from model.propagation.kernel_memory import KernelisedMemoryReader, kernelised_softmax, query_gaussians
    from model.propagation.memory import top_k_softmax_

    g = torch.Generator().manual_seed(0)
    aff = torch.randn(1, 3 * 6 * 5, 6 * 5, generator=g)
    gauss = query_gaussians(aff, 6, 5, 5.6)
    # the Gaussian of memory cell n peaks (value 1) at its best query cell
    assert torch.allclose(gauss.gather(2, aff.argmax(2, keepdim=True)), torch.ones(1, 90, 1))
    w = kernelised_softmax(aff, gauss, 50)
    assert torch.allclose(w.sum(1), torch.ones(1, 30), atol=1e-6) and int((w[:, :, 0] > 0).sum()) == 50
    # a flat kernel (σ → ∞) is the plain top-k softmax
    flat = kernelised_softmax(aff, torch.ones_like(aff), 50)
    assert torch.allclose(flat, top_k_softmax_(aff.clone(), 50), atol=1e-6)
    reader = KernelisedMemoryReader(top_k=None)
    out = reader(torch.randn(1, 8, 2, 6, 5, generator=g), torch.randn(1, 4, 2, 6, 5, generator=g),
                 torch.randn(1, 8, 6, 5, generator=g))
    assert out.shape == (1, 4, 6, 5) and torch.isfinite(out).all()
