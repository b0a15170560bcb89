"""Space-time memory of the propagation network.

* :class:`CertainMemory`: the memory of every interaction so far (one entry per ``interact`` call, in
  call order, even when a frame is interacted again), kept for the whole session.
* :class:`PassMemory`: the bank of one propagation pass: the certain memory, then a frame committed
  every ``mem_freq`` frames, then the previous frame as a *temporary* slot that the next frame
  overwrites unless it was committed. Slots are pre-allocated (as the original) so a readout is a view,
  never a copy.

Keys are ``K×128×T×h×w`` and values ``K×512×T×h×w`` (T = memory frames, h×w = H'/16×W'/16).
"""
from __future__ import annotations

import torch


class CertainMemory:
    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None    # K×128×N×h×w
        self.values: torch.Tensor | None = None  # K×512×N×h×w
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
    """The memory bank of one pass over ``n_frames`` frames with period ``mem_freq``."""

    def __init__(self, certain: CertainMemory, start_frame: int, n_frames: int, mem_freq: int):
        assert certain.keys is not None and certain.values is not None
        n_certain = len(certain)
        # committed slots: one every mem_freq frames of the pass, plus the temporary slot
        total = n_frames // mem_freq + 1 + n_certain
        k, ck, _, h, w = certain.keys.shape
        cv = certain.values.shape[1]
        dev, dt = certain.keys.device, certain.keys.dtype
        self.keys = torch.empty((k, ck, total, h, w), dtype=dt, device=dev)
        self.values = torch.empty((k, cv, total, h, w), dtype=certain.values.dtype, device=dev)
        self.keys[:, :, :n_certain] = certain.keys
        self.values[:, :, :n_certain] = certain.values
        self.mem_freq = mem_freq
        self.front = n_certain             # first free slot
        self.prev_committed = True         # is the previous frame already a committed slot?
        self.last_committed = start_frame  # frame index of the latest committed (or interacted) frame
        self.slot_frames: list[int] = list(certain.frames)
        self._temp_frame: int | None = None

    def readout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values a query reads: every committed slot, plus the temporary one if in use."""
        n = self.front if self.prev_committed else self.front + 1
        return self.keys[:, :, :n], self.values[:, :, :n]

    def frames_in_readout(self) -> list[int]:
        return self.slot_frames + ([] if self.prev_committed else [self._temp_frame])

    def add(self, t: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Write frame ``t``'s memory into the free slot; commit it if ``mem_freq`` frames passed."""
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
