"""Batch engine (util/batch.py): sharding, resume records, failure capture, merge across ranks."""
from __future__ import annotations

import io
import json
import random
import threading
from pathlib import Path

import pytest
import torch

from util.batch import (BatchContext, BatchError, DoneRecords, WorkItem, batch_device, batch_environment,
                        run_batch, settings_hash, shard)


def ctx(rank: int = 0, world: int = 1) -> BatchContext:
    return BatchContext(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


ITEMS = [WorkItem("a", 100), WorkItem("b", 90), WorkItem("c", 50), WorkItem("d", 40), WorkItem("e", 30),
         WorkItem("f", 20), WorkItem("g", 20), WorkItem("h", 5)]


# ------------------------------------------------------------------------------------------ sharding
def test_shard_is_balanced_by_frames_not_names():
    parts = shard(ITEMS, 2)
    loads = [sum(i.frames for i in p) for p in parts]
    assert sorted(i.name for p in parts for i in p) == sorted(i.name for i in ITEMS)
    # longest first: a→0, b→1, c→1, d→0, e→0 (140/170 → 170/170), f→0? loads decide; the gap is small
    assert abs(loads[0] - loads[1]) <= 20
    # by name, the first half would hold 260 of 355 frames
    assert max(loads) < 260


def test_shard_is_the_same_whatever_the_input_order():
    reference = [[i.name for i in p] for p in shard(ITEMS, 3)]
    for seed in range(5):
        items = ITEMS[:]
        random.Random(seed).shuffle(items)
        assert [[i.name for i in p] for p in shard(items, 3)] == reference


def test_shard_ties_go_by_name_and_every_rank_gets_work_when_possible():
    items = [WorkItem(n, 10) for n in "zyxw"]
    parts = shard(items, 4)
    assert [[i.name for i in p] for p in parts] == [["w"], ["x"], ["y"], ["z"]]
    assert shard(items[:1], 3)[1:] == [[], []]


def test_shard_rejects_duplicate_names():
    with pytest.raises(BatchError, match="more than once"):
        shard([WorkItem("a", 1), WorkItem("a", 2)], 2)


# ------------------------------------------------------------------------------------------ environment
def test_environment_plain_process_and_torchrun():
    assert batch_environment({}) == (0, 1, 0)
    assert batch_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(BatchError, match="RANK=4"):
        batch_environment({"RANK": "4", "WORLD_SIZE": "4"})
    assert batch_device("cpu", 1) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError):
            batch_device("cuda", 0)
        assert batch_device(None, 1) == torch.device("cpu")


# ------------------------------------------------------------------------------------------ resume
def _process_into(calls: list[str], fail: set[str] = frozenset()):
    def process(item: WorkItem, data=None) -> dict:
        calls.append(item.name)
        if item.name in fail:
            raise ValueError(f"cannot read {item.name}\nsecond line")
        return {"score": item.frames / 10, "name": item.name}
    return process


def test_finished_items_are_recorded_and_skipped_on_restart(tmp_path):
    calls: list[str] = []
    out = run_batch(ctx(), ITEMS[:3], _process_into(calls), tmp_path, {"mem_freq": 5}, progress=False)
    assert sorted(calls) == ["a", "b", "c"] and out.exit_code == 0 and out.processed == 3
    rec = json.loads((tmp_path / ".done" / "a.json").read_text())
    assert rec["status"] == "ok" and rec["result"] == {"score": 10.0, "name": "a"}
    assert rec["settings_hash"] == settings_hash({"mem_freq": 5})
    mtime = (tmp_path / ".done" / "a.json").stat().st_mtime_ns

    calls.clear()
    again = run_batch(ctx(), ITEMS[:4], _process_into(calls), tmp_path, {"mem_freq": 5}, progress=False)
    assert calls == ["d"] and again.skipped == 3
    assert list(again.results) == ["a", "b", "c", "d"]
    assert (tmp_path / ".done" / "a.json").stat().st_mtime_ns == mtime


def test_changed_settings_redo_everything(tmp_path):
    calls: list[str] = []
    run_batch(ctx(), ITEMS[:2], _process_into(calls), tmp_path, {"mem_freq": 5}, progress=False)
    calls.clear()
    run_batch(ctx(), ITEMS[:2], _process_into(calls), tmp_path, {"mem_freq": 3}, progress=False)
    assert sorted(calls) == ["a", "b"]


def test_a_broken_record_is_redone(tmp_path):
    calls: list[str] = []
    run_batch(ctx(), ITEMS[:2], _process_into(calls), tmp_path, {}, progress=False)
    (tmp_path / ".done" / "a.json").write_text('{"item": "a", "stat')
    calls.clear()
    run_batch(ctx(), ITEMS[:2], _process_into(calls), tmp_path, {}, progress=False)
    assert calls == ["a"]


def test_item_names_are_safe_file_names(tmp_path):
    records = DoneRecords(tmp_path, {})
    assert records.path("a/b c").parent == tmp_path / ".done"
    out = run_batch(ctx(), [WorkItem("../x/y", 1)], lambda it, data: 1, tmp_path, {}, progress=False)
    assert out.results == {"../x/y": 1}
    assert [p.name for p in (tmp_path / ".done").iterdir()] == ["..%2Fx%2Fy.json"]


# ------------------------------------------------------------------------------------------ failures
def test_a_failure_is_recorded_and_the_others_go_on_then_it_is_retried(tmp_path):
    calls: list[str] = []
    stream = io.StringIO()
    out = run_batch(ctx(), ITEMS[:4], _process_into(calls, {"b"}), tmp_path, {}, stream=stream)
    assert sorted(calls) == ["a", "b", "c", "d"]
    assert out.failed == {"b": "ValueError: cannot read b"} and out.exit_code == 1
    assert sorted(out.results) == ["a", "c", "d"]
    rec = json.loads((tmp_path / ".done" / "b.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "ValueError: cannot read b"
    assert "FAILED: ValueError: cannot read b" in stream.getvalue()

    calls.clear()
    fixed = run_batch(ctx(), ITEMS[:4], _process_into(calls), tmp_path, {}, progress=False)
    assert calls == ["b"] and fixed.exit_code == 0


def test_interrupt_stops_the_run_without_a_record(tmp_path):
    def process(item, data):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_batch(ctx(), ITEMS[:1], process, tmp_path, {}, progress=False)
    assert not (tmp_path / ".done" / "a.json").exists()


def test_progress_lines_name_rank_count_rate_and_eta(tmp_path):
    stream = io.StringIO()
    run_batch(ctx(), ITEMS[:2], lambda it, data: None, tmp_path, {}, stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[rank 0/1] 1/2 videos, ") and "frames/s, ETA " in lines[0]
    assert lines[1].startswith("[rank 0/1] 2/2 videos, ")
    stream = io.StringIO()
    run_batch(ctx(), ITEMS[:2], lambda it, data: None, tmp_path, {}, stream=stream)
    assert "2/2 videos already done (resumed), 0 to do" in stream.getvalue()


# ------------------------------------------------------------------------------------------ merge
def test_two_ranks_split_the_work_and_both_see_every_record(tmp_path):
    """Two ranks without a process group (the record files are the rendezvous): every item is done
    exactly once, by the rank the shard names, and both ranks merge the same records."""
    calls = {0: [], 1: []}
    outcomes = {}

    def rank(r: int) -> None:
        outcomes[r] = run_batch(ctx(r, 2), ITEMS, _process_into(calls[r], {"e"}), tmp_path, {"k": 1},
                                progress=False, poll_s=0.01, wait_timeout_s=60)

    t = threading.Thread(target=rank, args=(1,))
    t.start()
    rank(0)
    t.join()
    parts = shard(ITEMS, 2)
    assert sorted(calls[0]) == sorted(i.name for i in parts[0])
    assert sorted(calls[1]) == sorted(i.name for i in parts[1])
    assert outcomes[0].records == outcomes[1].records
    assert list(outcomes[0].records) == sorted(i.name for i in ITEMS)
    assert outcomes[0].failed == {"e": "ValueError: cannot read e"} and outcomes[1].exit_code == 1
    assert {outcomes[0].records[n]["rank"] for n in calls[1]} == {1}


def test_waiting_for_a_rank_that_never_comes_times_out(tmp_path):
    with pytest.raises(BatchError, match="no record"):
        run_batch(ctx(0, 2), ITEMS[:2], lambda it, data: None, tmp_path, {}, progress=False, poll_s=0.01,
                  wait_timeout_s=0.1)


def _load(item: WorkItem):
    if item.name == "c":
        raise OSError("c.mp4: no such file")
    import numpy as np
    return {"frames": np.full((2, 3), item.frames)}


@pytest.mark.parametrize("workers", [0, 1])
def test_loaded_data_arrives_as_tensors_and_a_load_failure_is_recorded(tmp_path, workers):
    got = {}

    def process(item, data):
        got[item.name] = data["frames"]
        return None
    out = run_batch(ctx(), ITEMS[:4], process, tmp_path, {}, load=_load, num_workers=workers, progress=False)
    assert sorted(got) == ["a", "b", "d"] and isinstance(got["a"], torch.Tensor) and int(got["b"][0, 0]) == 90
    assert out.failed == {"c": "OSError: c.mp4: no such file"}


def test_partial_writes_of_a_killed_run_are_removed(tmp_path):
    from util.fileio import atomic_path, remove_partial_writes
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "v" / "00000.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError   # a clean failure removes its temporary file itself
    (tmp_path / "v" / ".00001.png.abc123.tmp.png").write_bytes(b"half")   # what SIGKILL leaves
    (tmp_path / "v" / "00002.png").write_bytes(b"done")
    assert remove_partial_writes(tmp_path / "v") == 1
    assert [p.name for p in (tmp_path / "v").iterdir()] == ["00002.png"]


def test_a_long_wait_says_what_it_waits_for(tmp_path):
    from util.batch import wait_for_records
    lines: list[str] = []
    with pytest.raises(BatchError):
        wait_for_records(DoneRecords(tmp_path, {}), ["far-away"], poll_s=0.01, timeout_s=0.2,
                         report=lines.append, report_every_s=0.05)
    assert lines and "waiting for 1 item(s) of other processes, e.g. 'far-away'" in lines[0]
    assert "--output must be a folder they all see" in lines[0]
