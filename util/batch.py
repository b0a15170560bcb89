"""Batch jobs over many videos: one process, or many under ``torchrun`` on one or several machines.

A batch job is a list of :class:`WorkItem` (one per video, weighed by its frame count) and a function
that processes one item and returns a JSON-able result. :func:`run_batch` does the rest, identically in a
plain ``python script.py ...`` process and under ``torchrun --nnodes N --nproc_per_node G script.py ...``:

* **where**: :func:`init_batch` reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (a plain
  process is rank 0 of 1), picks the rank-local device (``cuda:LOCAL_RANK``, or the CPU) and starts a
  process group (NCCL on CUDA, gloo on the CPU) only when there is more than one process;
* **who does what**: :func:`shard` spreads the items over the ranks by frame count (greedy longest first:
  items by frames descending, then name, each to the least-loaded rank), the same on every rank;
* **resume**: every finished item leaves ``<output>/.done/<item>.json`` (written atomically) holding its
  result and the hash of the settings that produced it; a restarted run with the same settings skips
  those items, a run with other settings redoes them. A failed item is recorded with its error line and
  retried on the next run;
* **failures**: an exception while processing an item is recorded (``status: failed``, ``error``) and
  the other items go on; the exit code (:attr:`BatchOutcome.exit_code`) is 1 when any item failed;
* **progress**: each rank prints ``[rank r/W] done/total videos, frames/s, ETA`` lines on stderr;
* **merge**: when every item has a record (each rank waits on the record files, then a barrier), every
  rank reads all records; rank 0 writes the job's report from them and prints the summary.

The output folder must be one that every rank sees (a shared filesystem on several machines).
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import heapq
import json
import math
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import torch
import torch.distributed as dist

from util.fileio import atomic_write_text

DONE_DIR = ".done"
RECORD_VERSION = 1
#: a collective waits for the slowest rank; the record-file wait before the barrier bounds that wait,
#: this is the process group's own limit
GROUP_TIMEOUT = datetime.timedelta(days=7)


class BatchError(RuntimeError):
    """A batch job cannot be set up or merged (one-line message)."""


# ------------------------------------------------------------------------------------------ the process
@dataclass(frozen=True)
class BatchContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine, the
    ``device`` it computes on, and whether it started a process group (to tear down)."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BatchError(f"environment variable {name}={value!r} is not an integer; launch with torchrun "
                         "or unset it") from None


def batch_environment(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables; ``(0, 1, 0)`` for a plain process."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise BatchError(f"RANK={rank} / WORLD_SIZE={world} is not a valid rank; launch with torchrun")
    return rank, world, local


def batch_device(spec: str | None, local_rank: int) -> torch.device:
    """The device of this rank: ``auto``/``None`` → ``cuda:LOCAL_RANK`` when CUDA is usable, else the CPU;
    ``cuda`` → ``cuda:LOCAL_RANK``; ``cpu`` and ``cuda:N`` as given. Raises ValueError (one sentence)."""
    from util.precision import resolve_device
    device = resolve_device(spec)
    if device.type == "cuda" and device.index is None:
        device = resolve_device(f"cuda:{local_rank}")
    return device


def _die_with_launcher() -> None:
    """Under torchrun, ask Linux to kill this worker when its launcher dies.

    torchrun starts each worker in a session of its own, so a launcher killed with SIGKILL (a preempted
    job, ``kill -9``) would leave its workers running on; a restarted job would then compete with them
    for the same videos."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:   # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def init_batch(device: str | None = None, env: Mapping[str, str] | None = None) -> BatchContext:
    """Rank, device and (for more than one process) the process group: NCCL on CUDA, gloo on the CPU.

    ``device``: the user's ``--device`` (``None``/``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    rank, world, local = batch_environment(env)
    dev = batch_device(device, local)
    if env is None and "TORCHELASTIC_RUN_ID" in os.environ:
        _die_with_launcher()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                timeout=GROUP_TIMEOUT)
        group = True
    return BatchContext(rank=rank, world_size=world, local_rank=local, device=dev, group=group)


def shutdown_batch(ctx: BatchContext) -> None:
    """Destroy the process group :func:`init_batch` started (nothing otherwise)."""
    if ctx.group and dist.is_initialized():
        dist.destroy_process_group()


def _barrier(ctx: BatchContext) -> None:
    if ctx.world_size > 1 and dist.is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


# ------------------------------------------------------------------------------------------- the work
@dataclass(frozen=True)
class WorkItem:
    """One unit of work: a unique ``name`` (a video), its cost in ``frames``, and what the job needs to
    process it (``payload``, not recorded)."""
    name: str
    frames: int
    payload: Any = None


def shard(items: Sequence[WorkItem], world_size: int) -> list[list[WorkItem]]:
    """Items per rank, balanced by frame count: longest-processing-time first (frames descending, then
    name), each item to the least-loaded rank (lowest rank on ties). Depends only on the items' names and
    frame counts, so every rank computes the same split. Each rank's list is in that processing order."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    counts = collections.Counter(it.name for it in items)
    if len(counts) != len(items):
        dup = sorted(n for n, c in counts.items() if c > 1)[0]
        raise BatchError(f"item {dup!r} appears more than once; every video needs a unique name")
    heap = [(0, r) for r in range(world_size)]   # (load, rank): the least-loaded rank, lowest on ties
    out: list[list[WorkItem]] = [[] for _ in range(world_size)]
    for it in sorted(items, key=lambda i: (-max(int(i.frames), 0), i.name)):
        load, r = heapq.heappop(heap)
        out[r].append(it)
        # an item of 0 frames still costs something (reading it)
        heapq.heappush(heap, (load + max(int(it.frames), 1), r))
    return out


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that determine the results (JSON, sorted keys)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class DoneRecords:
    """The per-item records under ``<output>/.done``: ``<quoted item name>.json``."""

    def __init__(self, output: str | os.PathLike, settings: Mapping[str, Any]):
        self.folder = Path(output) / DONE_DIR
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        self.hash = settings_hash(settings)

    def path(self, name: str) -> Path:
        return self.folder / (urllib.parse.quote(name, safe="") + ".json")

    def read(self, name: str) -> dict | None:
        """The record of ``name`` if it exists, is readable and was made with the same settings."""
        try:
            rec = json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("settings_hash") != self.hash or rec.get("item") != name:
            return None
        return rec

    def finished(self, name: str) -> dict | None:
        """The record of ``name`` when it finished successfully with these settings (skip it), else None."""
        rec = self.read(name)
        return rec if rec is not None and rec.get("status") == "ok" else None

    def write(self, name: str, status: str, frames: int, seconds: float, rank: int, result: Any = None,
              error: str | None = None) -> dict:
        rec = {"version": RECORD_VERSION, "item": name, "status": status, "frames": int(frames),
               "seconds": float(seconds), "rank": int(rank), "settings_hash": self.hash,
               "settings": self.settings, "result": result}
        if error is not None:
            rec["error"] = error
        atomic_write_text(self.path(name), json.dumps(rec, indent=1, sort_keys=True) + "\n")
        return rec

    def discard(self, name: str) -> None:
        """Remove the record of ``name`` (an item about to be redone)."""
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass


def error_line(exc: BaseException) -> str:
    """One line naming the exception: ``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Per-rank progress lines on ``stream``: items done / total, frames/s of this run, ETA."""

    def __init__(self, ctx: BatchContext, items: Sequence[WorkItem], unit: str = "videos",
                 stream: TextIO | None = None, enabled: bool = True):
        self.ctx, self.unit, self.enabled = ctx, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.total = len(items)
        self.frames_left = sum(max(int(i.frames), 0) for i in items)
        self.done = self.failed = self.skipped = 0
        self.frames_run = 0
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        if self.enabled:
            print(f"[rank {self.ctx.rank}/{self.ctx.world_size}] {text}", file=self.stream, flush=True)

    def skip(self, item: WorkItem) -> None:
        self.done += 1
        self.skipped += 1
        self.frames_left -= max(int(item.frames), 0)

    def begin(self) -> None:
        if self.skipped:
            self.line(f"{self.skipped}/{self.total} {self.unit} already done (resumed), "
                       f"{self.total - self.done} to do")
        self.start = time.monotonic()

    def finish_item(self, item: WorkItem, ok: bool, error: str | None = None) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self.frames_run += max(int(item.frames), 0) if ok else 0
        self.frames_left -= max(int(item.frames), 0)
        elapsed = time.monotonic() - self.start
        fps = self.frames_run / elapsed if elapsed > 0 else float("nan")
        eta = self.frames_left / fps if fps and math.isfinite(fps) and fps > 0 else float("nan")
        what = f"{item.name} ({item.frames} frames)" + ("" if ok else f" FAILED: {error}")
        self.line(f"{self.done}/{self.total} {self.unit}, {fps:.2f} frames/s, ETA {_fmt_duration(eta)}: {what}")


@dataclass
class BatchOutcome:
    """What :func:`run_batch` leaves: every item's record (all ranks read them all), this rank's share."""
    ctx: BatchContext
    records: dict[str, dict]                 # item name → record, sorted by name
    own: list[str] = field(default_factory=list)
    processed: int = 0                       # items this rank computed in this run
    skipped: int = 0                         # items this rank found already done

    @property
    def failed(self) -> dict[str, str]:
        return {n: r.get("error", "failed") for n, r in self.records.items() if r.get("status") != "ok"}

    @property
    def results(self) -> dict[str, Any]:
        """Results of the items that finished, by name (sorted)."""
        return {n: r["result"] for n, r in self.records.items() if r.get("status") == "ok"}

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def wait_for_records(records: DoneRecords, names: Sequence[str], poll_s: float = 2.0,
                     timeout_s: float | None = None, report: Callable[[str], None] | None = None,
                     report_every_s: float = 600.0) -> dict[str, dict]:
    """Wait until every item in ``names`` has a record with the current settings (ok or failed); returns
    them by name (sorted). Raises :class:`BatchError` after ``timeout_s`` (None: no limit). ``report``
    gets a line every ``report_every_s`` while items are missing (what is waited for, and the usual cause
    when the wait does not end: an output folder the other machines do not see)."""
    start = time.monotonic()
    next_report = start + report_every_s
    pending = list(names)
    found: dict[str, dict] = {}
    while True:
        still = []
        for n in pending:
            rec = records.read(n)
            if rec is None:
                still.append(n)
            else:
                found[n] = rec
        pending = still
        if not pending:
            return {n: found[n] for n in sorted(found)}
        now = time.monotonic()
        if report is not None and now >= next_report:
            report(f"waiting for {len(pending)} item(s) of other processes, e.g. {pending[0]!r} (records in "
                   f"{records.folder}; on several machines --output must be a folder they all see)")
            next_report = now + report_every_s
        if timeout_s is not None and now - start > timeout_s:
            raise BatchError(f"{len(pending)} item(s) have no record in {records.folder} after "
                             f"{timeout_s:.0f} s, e.g. {pending[0]!r}; did a rank stop?")
        time.sleep(poll_s)


class _LoadedItems(torch.utils.data.Dataset):
    """The items' data for a DataLoader: a load error is returned (as its error line), not raised, so
    one unreadable video does not end the iteration over the others."""

    def __init__(self, items: Sequence[WorkItem], load: Callable[[WorkItem], Any]):
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        try:
            return {"data": self.load(self.items[index]), "error": None}
        except Exception as e:  # noqa: BLE001  (recorded as this item's failure)
            return {"data": None, "error": error_line(e)}


def _iterate(todo: Sequence[WorkItem], load: Callable[[WorkItem], Any] | None, num_workers: int):
    """``(item, data, error)`` in order; with ``load``, through a DataLoader (``batch_size=None``: numpy
    arrays arrive as tensors) that reads ahead in ``num_workers`` processes."""
    if load is None:
        for it in todo:
            yield it, None, None
        return
    from torch.utils.data import DataLoader
    loader = DataLoader(_LoadedItems(todo, load), batch_size=None, shuffle=False, num_workers=num_workers)
    for it, got in zip(todo, loader):
        yield it, got["data"], got["error"]


def run_batch(ctx: BatchContext, items: Sequence[WorkItem], process: Callable[[WorkItem, Any], Any],
              output: str | os.PathLike, settings: Mapping[str, Any], unit: str = "videos",
              load: Callable[[WorkItem], Any] | None = None, num_workers: int = 0,
              stream: TextIO | None = None, progress: bool = True, poll_s: float = 2.0,
              wait_timeout_s: float | None = None) -> BatchOutcome:
    """Process this rank's share of ``items`` with ``process(item, data)`` (result: JSON-able), skipping
    the items already done with the same ``settings``; record each outcome; wait for every rank; return
    all records. ``data`` is ``load(item)`` read ahead by ``num_workers`` DataLoader processes (None
    without ``load``).

    ``load`` or ``process`` may raise: the item is recorded as failed with the error line and the next
    one goes on (KeyboardInterrupt and SystemExit stop the run)."""
    records = DoneRecords(output, settings)
    mine = shard(items, ctx.world_size)[ctx.rank]
    prog = Progress(ctx, mine, unit=unit, stream=stream, enabled=progress)
    todo = []
    for it in mine:
        if records.finished(it.name) is not None:
            prog.skip(it)
        else:
            # a failed or stale record must not be merged while its item is being redone
            records.discard(it.name)
            todo.append(it)
    _barrier(ctx)   # no rank waits on a record another rank has yet to discard
    prog.begin()
    for it, data, load_error in _iterate(todo, load, num_workers):
        start = time.monotonic()
        err = load_error
        if err is None:
            try:
                result = process(it, data)
            except Exception as e:  # noqa: BLE001  (one bad video must not stop the others; it is reported)
                err = error_line(e)
        del data
        if err is not None:
            records.write(it.name, "failed", it.frames, time.monotonic() - start, ctx.rank, error=err)
            prog.finish_item(it, False, err)
            continue
        records.write(it.name, "ok", it.frames, time.monotonic() - start, ctx.rank, result=result)
        prog.finish_item(it, True)
    # every rank waits on the files (no collective timeout however uneven the shards), then one barrier
    all_records = wait_for_records(records, [it.name for it in items], poll_s=poll_s, timeout_s=wait_timeout_s,
                                   report=prog.line)
    _barrier(ctx)
    return BatchOutcome(ctx=ctx, records=all_records, own=[it.name for it in mine],
                        processed=len(todo), skipped=prog.skipped)


def summary_line(outcome: BatchOutcome, unit: str = "videos", elapsed_s: float | None = None) -> str:
    """The rank-0 final line: items ok / failed, frames, and the time of this run."""
    recs = outcome.records.values()
    ok = sum(1 for r in recs if r.get("status") == "ok")
    frames = sum(int(r.get("frames", 0)) for r in recs)
    text = (f"{len(outcome.records)} {unit} ({frames} frames) on {outcome.ctx.world_size} process(es): "
            f"{ok} ok, {len(outcome.failed)} failed")
    if elapsed_s is not None:
        text += f"; {_fmt_duration(elapsed_s)} wall time"
    return text


def report_failures(outcome: BatchOutcome, stream: TextIO | None = None) -> None:
    """One stderr line per failed item (``<name>: <error>``) — rank 0 only."""
    stream = stream if stream is not None else sys.stderr
    for name, err in outcome.failed.items():
        print(f"failed: {name}: {err}", file=stream)


def _load_from(dataset: Any, item: WorkItem) -> Any:
    return dataset[item.payload]


def dataset_loader(dataset: Any) -> Callable[[WorkItem], Any]:
    """A picklable ``load`` for :func:`run_batch` reading ``dataset[item.payload]``."""
    import functools
    return functools.partial(_load_from, dataset)


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and modification time of a file (a checkpoint) for the settings hash: replacing the
    file invalidates the results made with the old one."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path)}
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
