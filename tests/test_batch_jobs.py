"""The batch jobs on the batch engine, end to end: one process vs ``torchrun --nproc_per_node=2`` (CPU,
gloo) on generated data with seeded weights, a launcher killed with SIGKILL and restarted, per-video
failures, and the merged interactive report.

Both runs use one OpenMP thread per process (torchrun's default), since the numbers depend on the
thread count.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dataset.synthetic import generate_davis
from tests.helpers_weights import write_seeded_checkpoints

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
# 96×80 pads to 96×80: 6×5 memory cells, fewer than the top-k 50, so the plain softmax read (--no_top)
SIZE = (96, 80)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("batch_jobs")
    root = base / "davis"
    meta = generate_davis(root, num_sequences=3, num_frames=(4, 3, 3), size=SIZE, num_objects=(2, 1), seed=3)
    weights = write_seeded_checkpoints(base / "weights", ("propagation_model",))
    return {"base": base, "root": root, "meta": meta, "prop": weights["propagation_model"]}


def _eval_davis(data: dict, out: Path) -> list[str]:
    return ["eval_davis.py", "--model", str(data["prop"]), "--davis", str(data["root"]), "--output", str(out),
            "--no_top", "--num_workers", "0", "--device", "cpu"]


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file but the run records and the timing."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".done" not in p.parts and p.name not in ("timing.json", "scores.json")}


def _scores_without_timing(out: Path) -> dict:
    doc = json.loads((out / "scores.json").read_text())
    doc.pop("timing")
    return doc


@pytest.fixture(scope="module")
def single_davis(data) -> Path:
    """The one-process reference, run in this process with one thread (what torchrun gives each worker)."""
    import torch

    import eval_davis
    out = data["base"] / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert eval_davis.main(_eval_davis(data, out)[1:]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _records(out: Path) -> list[str]:
    """The videos with a finished record (not the hidden temporary files of a record being written)."""
    return sorted(p.stem for p in (out / ".done").glob("[!.]*.json"))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_eval_davis_two_processes_killed_and_resumed_equal_one_process(data, single_davis):
    """torchrun with 2 processes, its launcher killed (SIGKILL) after the first video, the same command
    again: the finished videos are not redone, and every output equals the one-process run's."""
    out = data["base"] / "two"
    cmd = _torchrun(_eval_davis(data, out))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _records(out):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)   # the launcher only: its workers must go with it
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(out)):
        assert time.monotonic() < deadline, "workers outlived their killed launcher"
        time.sleep(0.1)

    finished = _records(out)
    assert 1 <= len(finished) < 3, "the kill should land between the first and the last video"
    stamps = {str(p): p.stat().st_mtime_ns for name in finished
              for p in [out / ".done" / f"{name}.json", *(out / name).glob("*.png")]}

    res = _run(cmd)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {path: Path(path).stat().st_mtime_ns for path in stamps} == stamps
    assert "already done (resumed)" in res.stderr
    assert _outputs(out) == _outputs(single_davis)
    assert sorted(p.name for p in (out / "synth-000").glob("*.png")) == [f"{t:05d}.png" for t in range(4)]
    assert _scores_without_timing(out) == _scores_without_timing(single_davis)
    assert "[rank 1/2]" in res.stderr and "[rank 0/2]" in res.stderr
    assert "3 videos (10 frames) on 2 process(es): 3 ok, 0 failed" in res.stderr
    # the shards: both processes computed videos (over the two runs)
    assert {json.loads((out / ".done" / f"{n}.json").read_text())["rank"] for n in _records(out)} == {0, 1}


# ------------------------------------------------------------------------------------------ interactive
def _interactive(data: dict, out: Path) -> list[str]:
    return ["eval_interactive_davis.py", "--davis", str(data["root"]), "--output", str(out), "--oracle",
            "--no_progress", "--device", "cpu", "--max_interactions", "3"]


@pytest.mark.slow
def test_interactive_report_merged_from_two_processes_gives_the_single_process_scores(data):
    import pandas as pd

    import util.davis_compat as davis_compat  # noqa: I001  (before davisinteractive)
    import eval_interactive_davis as evaluator

    one, two = data["base"] / "int1", data["base"] / "int2"
    assert evaluator.main(_interactive(data, one)[1:]) == 0   # the oracle's masks do not depend on threads
    res2 = _run(_torchrun(_interactive(data, two)))
    assert res2.returncode == 0, res2.stderr[-2000:]
    rows1, rows2 = pd.read_csv(one / "report.csv"), pd.read_csv(two / "report.csv")
    assert len(rows1) == sum(m["num_frames"] * m["num_objects"] for m in data["meta"].values()) * 3
    # every row but the measured time and the package's random session id
    pd.testing.assert_frame_equal(rows1.drop(columns=["timing", "session_id"]),
                                  rows2.drop(columns=["timing", "session_id"]))
    assert {json.loads(p.read_text())["rank"] for p in (two / ".done").glob("[!.]*.json")} == {0, 1}

    # timing aside: the merged rows with the single run's timing give the single run's summary exactly
    rows2["timing"] = rows1["timing"]
    names = list(data["meta"])
    with davis_compat.preserved_davis_state():
        summary = evaluator.summarize_rows(evaluator.resolve_davis_root(data["root"]), "val", names,
                                           evaluator.typed_report(rows2), 3, 30.0)
    expected = json.loads((one / "summary.json").read_text())
    assert json.loads(json.dumps(summary, default=float)) == expected
    assert expected["metric_at_threshold"]["J_AND_F"] == 1.0


# ------------------------------------------------------------------------------------------ propagate --batch
def test_propagate_batch_records_a_bad_mask_and_redoes_only_that_video(data, tmp_path, capsys):
    import shutil

    import propagate

    root = data["root"]
    videos = tmp_path / "videos"
    for seq in ("synth-001", "synth-002"):
        shutil.copytree(root / "JPEGImages" / "480p" / seq, videos / seq)
        shutil.copy(root / "Annotations" / "480p" / seq / "00000.png", videos / f"{seq}.png")
    (videos / "synth-002.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["--batch", str(videos), "--output", str(out), "--model", str(data["prop"]), "--no_top",
            "--resolution", "-1", "--device", "cpu", "--quiet"]
    assert propagate.main(args) == 1
    report = json.loads((out / "batch_report.json").read_text())
    assert report["ok"] == 1 and report["failed"] == 1
    assert report["videos"]["synth-002"]["error"].startswith("PropagateError: --mask ")
    assert sorted(p.name for p in (out / "synth-001").glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert "failed: synth-002: PropagateError" in capsys.readouterr().err
    stamps = {p: p.stat().st_mtime_ns for p in (out / "synth-001").glob("*.png")}

    shutil.copy(root / "Annotations" / "480p" / "synth-002" / "00000.png", videos / "synth-002.png")
    assert propagate.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(list((out / "synth-002").glob("*.png"))) == 3
    report = json.loads((out / "batch_report.json").read_text())
    assert report["ok"] == 2 and report["videos"]["synth-002"]["objects"] == [1, 2]


def test_propagate_batch_list_file_and_its_errors(data, tmp_path, capsys):
    import propagate

    seq = data["root"] / "JPEGImages" / "480p" / "synth-001"
    mask = data["root"] / "Annotations" / "480p" / "synth-001" / "00000.png"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# source mask\n{seq}\t{mask}\n")
    videos = propagate.list_batch(listing)
    assert [(v.name, v.source, v.is_folder, v.mask) for v in videos] == [("synth-001", seq, True, mask)]
    listing.write_text(f"{seq} {mask}\n{seq} {mask}\n")
    with pytest.raises(propagate.PropagateError, match="two videos are named 'synth-001'"):
        propagate.list_batch(listing)
    assert propagate.main(["--batch", str(listing), "--mask", str(mask), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --mask {mask}: not with --batch")


# ------------------------------------------------------------------------------------------ fusion data, YouTube
@pytest.mark.slow
def test_generate_fusion_on_two_processes_equals_one_process(data, tmp_path):
    """The fusion-data generator (top-k read: 128×112 frames) sharded over 2 processes writes the same
    files as one process with one thread."""
    import torch

    import generate_fusion
    from tests.helpers_train import make_davis_set

    davis = make_davis_set(tmp_path / "DAVIS" / "2017", num_frames=3)
    args = ["--dataset", "DAVIS", "--davis_root", str(davis), "--model", str(data["prop"]), "--separation", "2",
            "--mem_freq", "1", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert generate_fusion.main([*args, "--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    res = _run(_torchrun(["generate_fusion.py", *args, "--output", str(tmp_path / "two")]))
    assert res.returncode == 0, res.stderr[-2000:]
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert len(one) > 0 and one == two
    assert {json.loads(p.read_text())["rank"] for p in (tmp_path / "two" / ".done").glob("[!.]*.json")} == {0, 1}


def test_eval_youtube_run_again_redoes_nothing_and_a_new_setting_redoes_all(data, tmp_path, capfd):
    import eval_youtube
    from tests.helpers_semisup import write_youtube_layout

    write_youtube_layout(tmp_path / "yv", num_frames=3, size=SIZE, ids=(2, 5, 9), late_frame=1)
    out = tmp_path / "out"
    args = ["--model", str(data["prop"]), "--yv", str(tmp_path / "yv"), "--output", str(out), "--num_workers", "0",
            "--device", "cpu", "--short_side", str(SIZE[1]), "--no_top"]
    assert eval_youtube.main(args) == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "vid0").glob("*.png")}
    assert len(stamps) == 3
    capfd.readouterr()
    assert eval_youtube.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "1/1 videos already done (resumed), 0 to do" in capfd.readouterr().err
    assert eval_youtube.main([*args, "--mem_freq", "2"]) == 0
    assert all(p.stat().st_mtime_ns != stamps[p] for p in stamps)
