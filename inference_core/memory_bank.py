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
"""
from __future__ import annotations

from typing import Sequence

import torch


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
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, base_frames: Sequence[int],
                 start_frame: int, frames: range, mem_freq: int):
        if mem_freq < 1:
            raise ValueError(f"mem_freq must be ≥ 1, got {mem_freq}")
        n_base = keys.shape[2]
        if len(base_frames) != n_base or values.shape[2] != n_base:
            raise ValueError(f"base memory has {n_base} key / {values.shape[2]} value entries for "
                             f"{len(base_frames)} frames")
        # at most one commit every mem_freq frames of the pass, plus the temporary slot
        total = len(frames) // mem_freq + 1 + n_base
        k, ck, _, h, w = keys.shape
        self.keys = torch.empty((k, ck, total, h, w), dtype=keys.dtype, device=keys.device)
        self.values = torch.empty((k, values.shape[1], total, h, w), dtype=values.dtype, device=values.device)
        self.keys[:, :, :n_base] = keys
        self.values[:, :, :n_base] = values
        self.mem_freq = mem_freq
        self.last_frame = frames[-1] if len(frames) else start_frame
        self.front = n_base                # first free slot
        self.prev_committed = True         # is the previous frame already a committed slot?
        self.last_committed = start_frame  # frame index of the latest committed (or start) frame
        self.slot_frames: list[int] = [int(t) for t in base_frames]
        self._temp_frame: int | None = None

    @classmethod
    def from_certain(cls, certain: CertainMemory, start_frame: int, frames: range, mem_freq: int) -> "PassMemory":
        """A pass of the interactive core: the base is every interaction so far."""
        if certain.keys is None or certain.values is None:
            raise ValueError("a pass needs at least one interaction in the certain memory")
        return cls(certain.keys, certain.values, certain.frames, start_frame, frames, mem_freq)

    def readout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values a query reads: every committed slot, plus the temporary one if in use."""
        n = self.front if self.prev_committed else self.front + 1
        return self.keys[:, :, :n], self.values[:, :, :n]

    def committed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The base memory plus every frame committed so far (no temporary slot)."""
        return self.keys[:, :, :self.front], self.values[:, :, :self.front]

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
        self.values[:, :, self.front:self.front + 1] = value
        if abs(t - self.last_committed) >= self.mem_freq:
            self.front += 1
            self.last_committed = t
            self.prev_committed = True
            self.slot_frames.append(t)
        else:
            self.prev_committed = False
            self._temp_frame = t
