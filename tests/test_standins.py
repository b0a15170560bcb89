"""Trained stand-in weights: the maker runs end to end, and (when made) the stand-ins follow held-out objects."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_standins  # noqa: E402

from inference_core.standin_eval import evaluate_propagation, held_out_clips  # noqa: E402
from model.factory import load_fusion, load_propagation, load_s2m  # noqa: E402

def test_tiny_run_writes_loadable_weights_and_held_out_scores(tmp_path, capsys):
    out = tmp_path / "standins"
    # --judge-bf16 on: the bf16 judgement runs (emulated where the CPU lacks bf16) and is recorded
    assert make_standins.main(["--tiny", "--iterations", "2", "--out", str(out), "--threads", "2",
                               "--judge-bf16", "on"]) == 0
    net = load_propagation(out / make_standins.PROP_FILE)  # strict: the official layout
    assert sum(p.numel() for p in net.parameters()) > 10 ** 6
    report = json.loads((out / make_standins.REPORT_FILE).read_text())
    held = report["propagation"]["held_out"]
    assert set(held["jf"]) == {"float32", "bfloat16"}
    assert all(0.0 <= v <= 1.0 for v in held["jf"].values())
    assert held["agreement"]["float32"] == 1.0
    assert report["settings"]["iterations_done"] == 2
    assert [row["it"] for row in report["propagation"]["curve"]][-1] == 2
    # the fusion stand-in: official layout, judged on a second round against the no-fusion baselines
    load_fusion(out / make_standins.FUSION_FILE)  # strict
    fusion = report["fusion"]["held_out"]
    assert set(fusion["jf"]) == {"float32", "bfloat16"} and fusion["agreement"]["float32"] == 1.0
    assert set(fusion["baselines"]) == {"round1", "replace"}
    assert all(0.0 <= v <= 1.0 for v in [*fusion["jf"].values(), *fusion["baselines"].values()])
    assert [row["it"] for row in report["fusion"]["curve"]][-1] == report["settings"]["fusion_iterations"]
    # the S2M stand-in: official layout, judged by IoU against the previous masks it starts from
    load_s2m(out / make_standins.S2M_FILE)  # strict
    s2m = report["s2m"]["held_out"]
    assert set(s2m["jf"]) == {"float32", "bfloat16"} and s2m["agreement"]["float32"] == 1.0
    assert s2m["baselines"]["first"] == 0.0 and 0.3 < s2m["baselines"]["correct"] < 0.9
    # nothing but the results is left in the output folder (clips, fusion data and S2M images were temporary)
    assert sorted(p.name for p in out.iterdir()) == sorted([make_standins.PROP_FILE, make_standins.FUSION_FILE,
                                                            make_standins.S2M_FILE, make_standins.REPORT_FILE])

    # --only fusion retrains the fusion stand-in on the propagation stand-in in place, keeping its report
    prop_bytes = (out / make_standins.PROP_FILE).read_bytes()
    assert make_standins.main(["--tiny", "--only", "fusion", "--fusion-iterations", "1", "--out", str(out),
                               "--threads", "2"]) == 0
    again = json.loads((out / make_standins.REPORT_FILE).read_text())
    assert again["propagation"] == report["propagation"] and again["s2m"] == report["s2m"]
    assert [row["it"] for row in again["fusion"]["curve"]] == [1]
    assert again["fusion"]["settings"]["fusion_iterations"] == 1
    assert (out / make_standins.PROP_FILE).read_bytes() == prop_bytes


@pytest.mark.parametrize("flags, judge, expected", [((), "auto", ["float32"]),
                                                   (("avx512_bf16",), "auto", ["float32", "bfloat16"]),
                                                   (("amx_bf16",), "off", ["float32"]),
                                                   ((), "on", ["float32", "bfloat16"])])
def test_bf16_is_judged_where_it_could_be_a_default(monkeypatch, flags, judge, expected):
    """By default bf16 is judged only on CPUs with native bf16 (elsewhere it is emulated, far slower than
    float32, and never the default); --judge-bf16 on/off overrides."""
    monkeypatch.setattr("util.precision.cpu_bf16_flags", lambda: flags)
    settings = make_standins.resolve_settings(make_standins.build_parser().parse_args(["--judge-bf16", judge]))
    assert settings["judge_precisions"] == expected


def test_only_fusion_without_a_propagation_stand_in_is_one_line_error(tmp_path, capsys):
    assert make_standins.main(["--tiny", "--only", "fusion", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --only fusion:"), err


def test_bad_crop_is_one_line_error(tmp_path, capsys):
    assert make_standins.main(["--tiny", "--crop", "70", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --crop 70:")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_standin_reaches_its_recorded_held_out_score():
    """The stand-in in the cache still scores what it scored when made (a propagation regression shows here)."""
    out = make_standins.DEFAULT_OUT
    path, report_path = out / make_standins.PROP_FILE, out / make_standins.REPORT_FILE
    if not path.is_file() or not report_path.is_file():
        pytest.skip(f"no stand-in in {out}: run `python scripts/make_standins.py --only propagation` (about an hour "
                    "on 2 cores)")
    torch.set_num_threads(2)
    report = json.loads(report_path.read_text())
    settings = report["settings"]
    recorded = report["propagation"]["held_out"]["jf"]["float32"]
    clips = held_out_clips(settings["eval_clips"], settings["eval_frames"], tuple(settings["eval_size"]))
    result = evaluate_propagation(load_propagation(path), clips, ("float32",))
    assert result.jf["float32"] >= recorded - 0.01, result.per_clip


@pytest.mark.parametrize("argv, flag", [(["--bn-freeze", "1.5"], "--bn-freeze 1.5"),
                                        (["--warm", "0.7", "0.3"], "--warm 0.7 0.3"),
                                        (["--train-objects", "0"], "--train-objects 0"),
                                        (["--train-objects", "2", "300"], "--train-objects 2 300"),
                                        (["--train-clips", "1", "--batch", "2"], "--batch 2")])
def test_bad_schedule_fractions_are_one_line_errors(tmp_path, capsys, argv, flag):
    assert make_standins.main(["--tiny", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}:")


def test_bn_freeze_exact_recomputes_the_statistics_where_they_freeze(tmp_path, monkeypatch):
    """--bn-freeze F --bn-freeze-exact: whole-frame statistics at iteration F·N, then BatchNorm in eval mode."""
    calls = []
    real = make_standins.recalibrate_batchnorm
    monkeypatch.setattr(make_standins, "recalibrate_batchnorm",
                        lambda net, settings: calls.append(net.training) or real(net, settings))
    settings = make_standins.resolve_settings(make_standins.build_parser().parse_args(
        ["--tiny", "--iterations", "2", "--bn-freeze", "0.5", "--bn-freeze-exact", "--train-clips", "2"]))
    root = tmp_path / "clips"
    make_standins.write_training_clips(root, settings)
    torch.set_num_threads(2)
    lines = []
    network, _ = make_standins.train_propagation(settings, root, tmp_path, log=lines.append)
    assert calls == [True] and "it 1: BatchNorm statistics frozen" in lines
    assert not network.training  # frozen statistics: BatchNorm in eval mode for the rest of the run


def test_training_clips_cycle_through_the_object_counts_given():
    settings = make_standins.resolve_settings(make_standins.build_parser().parse_args(
        ["--tiny", "--train-objects", "3", "2", "--train-clips", "3"]))
    clips = list(make_standins.training_clips(settings))
    assert [c.num_objects for c in clips] == [3, 2, 3]
    assert [len(np.unique(c.labels[0])) - 1 for c in clips] == [3, 2, 3]  # every object visible in frame 0


def test_batchnorm_recalibration_uses_exact_statistics_of_whole_training_frames():
    """After recalibration the first BatchNorm of the query encoder holds the mean and (unbiased) variance of
    its input over the training clip's frames, whatever the training statistics were; weights are unchanged."""
    from dataset.range_transform import im_normalization
    from model.propagation.prop_net import PropagationNetwork

    settings = make_standins.resolve_settings(make_standins.build_parser().parse_args(
        ["--tiny", "--train-clips", "1", "--batch", "1"]))
    torch.manual_seed(0)
    net = PropagationNetwork().eval()
    bn = net.rgb_encoder.bn1
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}

    make_standins.recalibrate_batchnorm(net, settings)

    clip = next(make_standins.training_clips(settings))
    frames = im_normalization(torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255)
    with torch.no_grad():
        x = net.rgb_encoder.conv1(frames)
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert not net.training and bn.momentum == 0.1  # back to inference mode and the layer's own momentum
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())


def test_s2m_held_out_cases_are_reproducible_and_leave_numpy_alone():
    from inference_core.standin_eval import s2m_cases
    clips = held_out_clips(1, 6, (160, 128), num_objects=(2,))
    np_state = np.random.get_state()[1].copy()
    a, b = s2m_cases(clips), s2m_cases(clips)
    assert (np.random.get_state()[1] == np_state).all()  # the caller's global generator is untouched
    assert len(a) == len(b) > 0 and {c.kind for c in a} == {"first", "correct"}
    for x, y in zip(a, b):
        assert all((getattr(x, f) == getattr(y, f)).all() for f in ("prev", "pos", "neg", "gt"))
        assert x.image.shape[-2:] == x.gt.shape == x.pos.shape  # padded to /16 together
    first = [c for c in a if c.kind == "first"]
    assert all(not c.prev.any() and c.pos.any() for c in first)  # from nothing, positive strokes only
