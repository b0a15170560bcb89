"""Trained stand-in weights: the maker runs end to end, and (when made) the stand-ins follow held-out objects."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_standins  # noqa: E402

from inference_core.standin_eval import evaluate_propagation, held_out_clips  # noqa: E402
from model.factory import load_propagation  # noqa: E402

def test_tiny_run_writes_loadable_weights_and_held_out_scores(tmp_path, capsys):
    out = tmp_path / "standins"
    assert make_standins.main(["--tiny", "--iterations", "2", "--out", str(out), "--threads", "2"]) == 0
    net = load_propagation(out / make_standins.PROP_FILE)  # strict: the official layout
    assert sum(p.numel() for p in net.parameters()) > 10 ** 6
    report = json.loads((out / make_standins.REPORT_FILE).read_text())
    held = report["propagation"]["held_out"]
    assert set(held["jf"]) == {"float32", "bfloat16"}
    assert all(0.0 <= v <= 1.0 for v in held["jf"].values())
    assert held["agreement"]["float32"] == 1.0
    assert report["settings"]["iterations_done"] == 2
    assert [row["it"] for row in report["propagation"]["curve"]][-1] == 2
    # nothing but the results is left in the output folder (the training clips were temporary)
    assert sorted(p.name for p in out.iterdir()) == sorted([make_standins.PROP_FILE, make_standins.REPORT_FILE])


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
        pytest.skip(f"no stand-in in {out}: run `python scripts/make_standins.py` (about 20 min on 2 cores)")
    torch.set_num_threads(2)
    report = json.loads(report_path.read_text())
    settings = report["settings"]
    recorded = report["propagation"]["held_out"]["jf"]["float32"]
    clips = held_out_clips(settings["eval_clips"], settings["eval_frames"], tuple(settings["eval_size"]))
    result = evaluate_propagation(load_propagation(path), clips, ("float32",))
    assert result.jf["float32"] >= recorded - 0.01, result.per_clip


@pytest.mark.parametrize("argv, flag", [(["--bn-freeze", "1.5"], "--bn-freeze 1.5"),
                                        (["--warm", "0.7", "0.3"], "--warm 0.7 0.3")])
def test_bad_schedule_fractions_are_one_line_errors(tmp_path, capsys, argv, flag):
    assert make_standins.main(["--tiny", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}:")
