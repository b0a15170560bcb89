"""Space-time memory of the propagation network: the one implementation of the memory schedule.

* :class:`CertainMemory`: the memory of every interaction so far (one entry per ``interact`` call, in
  call order, even when a frame is interacted again), kept for the whole session.
* :class:`PassMemory`: the bank of one propagation pass. A query reads the pass's *base* memory (the
  certain memory, or whatever the caller keeps for the whole video), then a frame committed every
  ``mem_freq`` frames, then the previous frame as a *temporary* slot that the next frame overwrites
  unless it was committed. The last frame of a pass is never memorised (no query would read it).
  Slots are pre-allocated so a readout is a view, never a copy.

Every propagation of the project follows this schedule through :class:`PassMemory`: the interactive
core (:mod:`inference_core.core`), the semi-supervised evaluation (:mod:`inference_core.semisup`) and
the fusion-data generator (:mod:`inference_core.fusion_generator`).

Keys are ``K×Ck×T×h×w`` and values ``K×Cv×T×h×w`` (T = memory frames, h×w = H'/16×W'/16; the real
network has Ck = 128, Cv = 512).

Layout and spilling of a pass's bank: values are stored *cell-major* (``K×T×h×w×Cv`` in memory, seen
as the logical ``K×Cv×T×h×w`` through a permutation), so that one object's values are a table of
``T·h·w`` contiguous rows of Cv floats: the top-k readout gathers rows of that table without copying
it. With ``spill_dir``, only the first slots that fit ``ram_bytes`` stay in RAM; later committed
frames have their value rows written to an anonymous file (:class:`inference_core.spill_file.SpillFile`)
and the readout hands the network a :class:`model.propagation.memory.RowSource` per object that reads
only the rows the top-k selection picked. Keys stay in RAM: every query compares against all of them.
The numbers are bit-identical either way.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from inference_core.spill_file import SpillFile

# a gap of at most this many unneeded rows between two needed ones is read (into a scratch buffer)
# rather than paying another system call (a row is Cv floats, 2 KiB for the real network)
_MAX_GAP_ROWS = 16
# pieces per preadv call, well under the system's IOV_MAX (1024 on Linux)
_MAX_PIECES = 256


class CertainMemory:
    """The memory of every interaction of a session: keys ``K×Ck×N×h×w``, values ``K×Cv×N×h×w``."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.frames: list[int] = []

    def __len__(self) -> int:
        return len(self.frames)

    def append(self, t: int, key: torch.Tensor, value: torch.Tensor) -> None:
        if self.keys is None:
            self.keys, self.values = key, value
        else:
            self.keys = torch.cat([self.keys, key], 2)
            self.values = torch.cat([self.values, value], 2)
        self.frames.append(t)

    def clear(self) -> None:
        self.keys = self.values = None
        self.frames = []


class PassMemory:
    """The memory bank of one pass over ``frames`` (a range from the frame after the start frame,
    in the pass's direction) with period ``mem_freq``.

    Args:
        keys, values: the base memory ``K×Ck×N×h×w`` / ``K×Cv×N×h×w`` (N ≥ 1), read by every query.
        base_frames: the frame of each of the N base entries (reported by :meth:`frames_in_readout`).
        start_frame: the frame the pass starts from (its memory is in the base); commits are counted
            from it.
        frames: the frames the pass visits, in order (e.g. ``range(start + 1, stop)`` forward or
            ``range(start - 1, stop, -1)`` backward).
        mem_freq: a visited frame is committed when it is at least ``mem_freq`` frames away from the
            last committed one (or from the start frame).
        spill_dir: where values of slots beyond ``ram_bytes`` are written (None: all in RAM).
        ram_bytes: in-RAM budget of the values when ``spill_dir`` is given (the slots that fit are
            the first ones: the base and the earliest commits).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, base_frames: Sequence[int],
                 start_frame: int, frames: range, mem_freq: int, *,
                 spill_dir: str | os.PathLike | None = None, ram_bytes: int = 0):
        if mem_freq < 1:
            raise ValueError(f"mem_freq must be ≥ 1, got {mem_freq}")
        if ram_bytes < 0:
            raise ValueError(f"ram_bytes must be ≥ 0, got {ram_bytes}")
        n_base = keys.shape[2]
        if len(base_frames) != n_base or values.shape[2] != n_base:
            raise ValueError(f"base memory has {n_base} key / {values.shape[2]} value entries for "
                             f"{len(base_frames)} frames")
        # at most one commit every mem_freq frames of the pass, plus the temporary slot
        total = len(frames) // mem_freq + 1 + n_base
        k, ck, _, h, w = keys.shape
        cv = values.shape[1]
        self.keys = torch.empty((k, ck, total, h, w), dtype=keys.dtype, device=keys.device)
        self.keys[:, :, :n_base] = keys
        self.k, self.cv, self.cells = k, cv, h * w
        self.slot_bytes = k * h * w * cv * values.element_size()
        # slots [0, ram_slots) live in RAM; committed slots from ram_slots on live in the file; the
        # slot being written (temporary, or about to be committed) uses the extra RAM slot ram_slots
        self.ram_slots = total if spill_dir is None else min(total, ram_bytes // self.slot_bytes)
        allocated = min(total, self.ram_slots + 1)
        # cell-major: one object's values are rows of Cv floats (see the module's docstring)
        self._ram = torch.empty((k, allocated, h, w, cv), dtype=values.dtype, device=values.device)
        self._file: SpillFile | None = None
        if self.ram_slots < total:
            if values.device.type != "cpu":
                raise ValueError("memory values can be spilled from CPU memory only")
            self._file = SpillFile(spill_dir, ".memory-values-")
        self._file_slots = total - self.ram_slots   # per-object capacity of the file, in slots
        self._ram_written = 0                         # RAM slots written so far (resident memory)
        self.mem_freq = mem_freq
        self.last_frame = frames[-1] if len(frames) else start_frame
        self.front = 0                     # first free slot
        for i in range(n_base):
            self._write_slot(values[:, :, i:i + 1])
            self.front += 1
        self.prev_committed = True         # is the previous frame already a committed slot?
        self.last_committed = start_frame  # frame index of the latest committed (or start) frame
        self.slot_frames: list[int] = [int(t) for t in base_frames]
        self._temp_frame: int | None = None

    @classmethod
    def from_certain(cls, certain: CertainMemory, start_frame: int, frames: range, mem_freq: int, *,
                     spill_dir: str | os.PathLike | None = None, ram_bytes: int = 0) -> "PassMemory":
        """A pass of the interactive core: the base is every interaction so far."""
        if certain.keys is None or certain.values is None:
            raise ValueError("a pass needs at least one interaction in the certain memory")
        return cls(certain.keys, certain.values, certain.frames, start_frame, frames, mem_freq,
                   spill_dir=spill_dir, ram_bytes=ram_bytes)

    # ------------------------------------------------------------------ storage
    @property
    def values(self) -> torch.Tensor:
        """The values kept in RAM as the logical ``K×Cv×S×h×w`` (a view of the cell-major storage)."""
        return self._ram.permute(0, 4, 1, 2, 3)

    @property
    def spilled_slots(self) -> int:
        """Committed slots whose values are in the spill file."""
        return max(0, self.front - self.ram_slots)

    @property
    def disk_bytes(self) -> int:
        """Bytes of values written to the spill file."""
        return self.spilled_slots * self.slot_bytes

    @property
    def ram_bytes(self) -> int:
        """Bytes of values written to RAM slots so far (what is resident; the rest of the RAM
        storage is allocated but never touched)."""
        return self._ram_written * self.slot_bytes

    @property
    def ram_capacity_bytes(self) -> int:
        """Bytes of values the bank can hold in RAM (its RAM slots plus the slot being written)."""
        return self._ram.shape[1] * self.slot_bytes

    def _write_slot(self, value: torch.Tensor) -> None:
        """Store ``value`` (``K×Cv×1×h×w``) as slot ``front``: in RAM (a slot of its own, or the
        extra slot when ``front`` is beyond the RAM slots)."""
        at = min(self.front, self.ram_slots)
        self.values[:, :, at:at + 1] = value
        self._ram_written = max(self._ram_written, at + 1)
        if self.front >= self.ram_slots:
            self._spill_front()

    def _spill_front(self) -> None:
        """Copy the extra RAM slot to the file as slot ``front`` (each object's rows go to its own
        region of the file, so an object's spilled rows are contiguous in slot order)."""
        assert self._file is not None
        row_bytes = self.cv * self._ram.element_size()
        f = self.front - self.ram_slots
        for obj in range(self.k):
            rows = self._ram[obj, self.ram_slots].contiguous().view(torch.uint8).numpy()
            self._file.write((obj * self._file_slots + f) * self.cells * row_bytes, rows)

    def _read_rows(self, obj: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows of object ``obj``'s spilled values (``rows``: int64, relative to the first spilled
        slot) → ``len(rows)×Cv``, bit for bit. Each distinct row is read once, into a buffer of exactly
        the distinct rows; runs of needed rows closer than ``_MAX_GAP_ROWS`` share one ``preadv``."""
        assert self._file is not None
        row_bytes = self.cv * self._ram.element_size()
        unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        u = unique.numpy()
        buf = np.empty((len(u), row_bytes), dtype=np.uint8)
        scratch = np.empty((_MAX_GAP_ROWS, row_bytes), dtype=np.uint8)
        # segments: maximal stretches of consecutive rows; gap[i]: unneeded rows before segment i + 1
        breaks = np.flatnonzero(np.diff(u) != 1) + 1
        seg_start = np.concatenate(([0], breaks)).tolist()
        seg_end = np.concatenate((breaks, [len(u)])).tolist()
        gap = (u[breaks] - u[breaks - 1] - 1).tolist()
        base = obj * self._file_slots * self.cells
        i = 0
        while i < len(seg_start):
            offset = (base + int(u[seg_start[i]])) * row_bytes
            pieces = [memoryview(buf[seg_start[i]:seg_end[i]])]
            while i + 1 < len(seg_start) and gap[i] <= _MAX_GAP_ROWS and len(pieces) < _MAX_PIECES:
                pieces.append(memoryview(scratch[:gap[i]]))
                i += 1
                pieces.append(memoryview(buf[seg_start[i]:seg_end[i]]))
            self._file.read_scattered(offset, pieces)
            i += 1
        table = torch.from_numpy(buf).view(self._ram.dtype)                  # distinct rows × Cv
        return table[inverse]

    def _slots(self, n: int) -> torch.Tensor | list["_BankRows"]:
        """Values of slots [0, n) (slot ``front`` being the one last written): a view of the RAM
        storage when none of them is spilled, else a row source per object."""
        if self.front <= self.ram_slots:
            return self.values[:, :, :n]
        return [_BankRows(self, obj, n) for obj in range(self.k)]

    def close(self) -> None:
        """Delete the spill file (also done when the bank is garbage-collected)."""
        if self._file is not None:
            self._file.close()

    # ------------------------------------------------------------------ schedule
    def readout(self) -> tuple[torch.Tensor, torch.Tensor | list["_BankRows"]]:
        """Keys/values a query reads: every committed slot, plus the temporary one if in use. Values
        are a ``K×Cv×T×h×w`` view, or (some slots spilled) a list of K row sources for
        :class:`model.propagation.memory.EvalMemoryReader`."""
        n = self.front if self.prev_committed else self.front + 1
        return self.keys[:, :, :n], self._slots(n)

    def committed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The base memory plus every frame committed so far (no temporary slot); spilled values are
        read back into one tensor."""
        keys = self.keys[:, :, :self.front]
        values = self._slots(self.front)
        if isinstance(values, list):
            everything = torch.arange(self.front * self.cells)
            h, w = keys.shape[-2:]
            rows = torch.stack([v.gather_rows(everything) for v in values])   # K×(T·h·w)×Cv
            values = rows.view(self.k, self.front, h, w, self.cv).permute(0, 4, 1, 2, 3)
        return keys, values

    def frames_in_readout(self) -> list[int]:
        """The frame of every entry :meth:`readout` returns, in order."""
        return self.slot_frames + ([] if self.prev_committed else [self._temp_frame])

    def wants(self, t: int) -> bool:
        """Whether frame ``t``'s result should be memorised (every visited frame but the last)."""
        return t != self.last_frame

    def add(self, t: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Write frame ``t``'s memory (``K×Ck×1×h×w`` / ``K×Cv×1×h×w``) into the free slot; commit it
        if ``mem_freq`` frames passed since the last commit, else it is the temporary slot."""
        self.keys[:, :, self.front:self.front + 1] = key
        commit = abs(t - self.last_committed) >= self.mem_freq
        at = min(self.front, self.ram_slots)
        self.values[:, :, at:at + 1] = value
        self._ram_written = max(self._ram_written, at + 1)
        if commit and self.front >= self.ram_slots:
            self._spill_front()
        if commit:
            self.front += 1
            self.last_committed = t
            self.prev_committed = True
            self.slot_frames.append(t)
        else:
            self.prev_committed = False
            self._temp_frame = t


class _BankRows:
    """Object ``obj``'s values of slots [0, n) of a partly spilled :class:`PassMemory`, as a
    :class:`model.propagation.memory.RowSource`: row r is cell ``r mod h·w`` of slot ``r div h·w``.

    Rows of RAM slots and of the slot being written come from the RAM storage, rows of spilled slots
    from the file (one positioned read per contiguous run of needed rows)."""

    def __init__(self, bank: PassMemory, obj: int, n: int):
        self._bank, self._obj = bank, obj
        self.num_rows = n * bank.cells
        self.channels = bank.cv
        self.dtype = bank._ram.dtype

    def gather_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` int64 ``L`` → ``L×Cv`` (contiguous)."""
        bank = self._bank
        lo, hi = bank.ram_slots * bank.cells, bank.front * bank.cells    # the spilled rows
        in_file = (indices >= lo) & (indices < hi)
        # the slot after the spilled ones is the extra RAM slot, right after the RAM slots
        ram_rows = torch.where(indices >= hi, indices - (hi - lo), indices).masked_fill_(in_file, 0)
        out = bank._ram[self._obj].view(-1, self.channels).index_select(0, ram_rows)
        if bool(in_file.any()):
            out[in_file] = bank._read_rows(self._obj, indices[in_file] - lo)
        return out
