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

# what the full stand-in reaches must stay well above an untrained network (J&F ~0.05 on these clips)
MIN_HELD_OUT_JF = 0.5


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
def test_standin_follows_held_out_objects():
    path = make_standins.DEFAULT_OUT / make_standins.PROP_FILE
    if not path.is_file():
        pytest.skip(f"no stand-in at {path}: run `python scripts/make_standins.py` (about an hour on 2 cores)")
    torch.set_num_threads(2)
    net = load_propagation(path)
    clips = held_out_clips(2, 12)
    result = evaluate_propagation(net, clips, ("float32",))
    assert result.jf["float32"] >= MIN_HELD_OUT_JF, result.per_clip
