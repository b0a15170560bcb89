"""Per-frame object probabilities, background included: ``(K+1)×1×H'×W'`` per frame.

Frames never written read as the initial state (background 1e-7, objects 0) without being stored, so
memory grows with the frames actually propagated. ``storage="float32"`` keeps the original's exact
numbers; ``"uint16"`` stores the K object channels quantised to 1/65535 (abs. error ≤ 7.7e-6) and
derives the background as ``1 − Σ objects`` (every stored distribution sums to 1: interaction masks and
aggregated outputs), i.e. ``K/(K+1)`` of half the memory, for long clips.

With ``spill_dir`` the store keeps at most ``ram_bytes`` of frames in memory (the most recently used:
the working range of a propagation) and writes the others, bit for bit, to one file in ``spill_dir``
(plain positioned reads and writes, no memory map: the kernel's page cache, not this process, holds the
file). The numbers are unchanged, so spilling is allowed in the exact mode; a full pass over a long clip
then needs memory for the working range only.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from inference_core.spill_file import SpillFile

BG_INIT = 1e-7


class ProbStore:
    def __init__(self, num_objects: int, t: int, nh: int, nw: int, device: torch.device,
                 storage: str = "float32", *, spill_dir: str | os.PathLike | None = None,
                 ram_bytes: int = 256 * 2 ** 20):
        if storage not in ("float32", "uint16"):
            raise ValueError(f"prob storage must be 'float32' or 'uint16', got {storage!r}")
        if ram_bytes < 0:
            raise ValueError(f"ram_bytes must be ≥ 0, got {ram_bytes}")
        self.k, self.t, self.nh, self.nw = num_objects, t, nh, nw
        self.device = torch.device(device)
        self.storage = storage
        self.ram_bytes = ram_bytes
        # frames held in memory, least recently used first
        self._frames: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._on_disk: set[int] = set()
        # the GUI's view thread reads frames while the worker propagates
        self._lock = threading.RLock()
        self._spill: _SpillFile | None = None
        if spill_dir is not None:
            self._spill = _SpillFile(Path(spill_dir), self._frame_shape(), self._dtype())

    # ------------------------------------------------------------------ layout
    def _dtype(self) -> torch.dtype:
        return torch.uint16 if self.storage == "uint16" else torch.float32

    def _frame_shape(self) -> tuple[int, ...]:
        channels = self.k if self.storage == "uint16" else self.k + 1
        return (channels, 1, self.nh, self.nw)

    def _initial(self, device: torch.device) -> torch.Tensor:
        p = torch.zeros((self.k + 1, 1, self.nh, self.nw), dtype=torch.float32, device=device)
        p[0] = BG_INIT
        return p

    # ------------------------------------------------------------------ access
    def _stored(self, t: int) -> torch.Tensor | None:
        """The stored form of frame ``t`` (uint16 object channels or float32 all channels), or None."""
        stored = self._frames.get(t)
        if stored is not None:
            self._frames.move_to_end(t)
            return stored
        if t in self._on_disk:
            assert self._spill is not None
            stored = self._spill.read(t).to(self.device)
            self._keep(t, stored)
            return stored
        return None

    def get(self, t: int, device: torch.device | None = None) -> torch.Tensor:
        """Probabilities of frame ``t`` as float32 ``(K+1)×1×H'×W'`` on ``device`` (default: storage device)."""
        device = device or self.device
        with self._lock:
            stored = self._stored(t)
        if stored is None:
            return self._initial(device)
        if self.storage == "uint16":
            objects = stored.to(device).float().div_(65535.0)
            background = (1 - objects.sum(0, keepdim=True)).clamp_(0, 1)
            return torch.cat([background, objects], 0)
        return stored.to(device)

    def set(self, t: int, prob: torch.Tensor) -> None:
        prob = prob.detach()
        if self.storage == "uint16":
            stored = prob[1:].to(self.device).clamp(0, 1).mul(65535.0).round_().to(torch.int32).to(torch.uint16)
        else:
            stored = prob.to(device=self.device, dtype=torch.float32).clone()
        with self._lock:
            self._on_disk.discard(t)   # the file's copy is stale now
            self._keep(t, stored)

    def _keep(self, t: int, stored: torch.Tensor) -> None:
        """Hold frame ``t`` in memory; with a spill file, write the least recently used frames out
        until the in-memory frames fit ``ram_bytes`` (the newest frame always stays)."""
        self._frames[t] = stored
        self._frames.move_to_end(t)
        if self._spill is None:
            return
        while len(self._frames) > 1 and self.nbytes > self.ram_bytes:
            old, data = self._frames.popitem(last=False)
            self._spill.write(old, data)
            self._on_disk.add(old)

    def release(self, t: int) -> None:
        """Drop frame ``t`` (it reads as the initial state again): lets a forward-only propagation
        keep O(1) frames of probabilities once results are written out."""
        with self._lock:
            self._frames.pop(t, None)
            self._on_disk.discard(t)

    def is_set(self, t: int) -> bool:
        return t in self._frames or t in self._on_disk

    def add_object(self) -> None:
        """Append an empty channel for a new object to every stored frame (spilled ones included)."""
        with self._lock:
            on_disk = sorted(self._on_disk)
            spilled = {t: self._spill.read(t) for t in on_disk} if self._spill is not None else {}
            self.k += 1
            for t, p in self._frames.items():
                self._frames[t] = torch.cat([p, torch.zeros_like(p[:1])], 0)
            if self._spill is not None:
                self._spill.reshape(self._frame_shape())
                for t, p in spilled.items():
                    self._spill.write(t, torch.cat([p, torch.zeros_like(p[:1])], 0))

    def dense(self) -> torch.Tensor:
        """All frames as one float32 tensor ``(K+1)×T×1×H'×W'`` (the original's ``prob`` layout)."""
        return torch.stack([self.get(t) for t in range(self.t)], 1)

    @property
    def nbytes(self) -> int:
        """Bytes of probabilities held in memory."""
        return sum(p.numel() * p.element_size() for p in self._frames.values())

    @property
    def disk_bytes(self) -> int:
        """Bytes of probabilities written to the spill file (0 without one)."""
        if self._spill is None:
            return 0
        return len(self._on_disk) * self._spill.frame_bytes

    def close(self) -> None:
        """Delete the spill file (also done when the store is garbage-collected)."""
        if self._spill is not None:
            self._spill.close()


class _SpillFile:
    """Fixed-size frame records in one anonymous :class:`SpillFile`: frame ``t`` lives at
    ``t × frame_bytes``."""

    def __init__(self, folder: Path, shape: tuple[int, ...], dtype: torch.dtype):
        self._file = SpillFile(folder, ".probabilities-")
        self.dtype = dtype
        self.reshape(shape)

    def reshape(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.frame_bytes = int(np.prod(shape)) * torch.empty((), dtype=self.dtype).element_size()

    def write(self, t: int, data: torch.Tensor) -> None:
        buf = data.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
        assert len(buf) == self.frame_bytes
        self._file.write(t * self.frame_bytes, buf)

    def read(self, t: int) -> torch.Tensor:
        raw = bytearray(self.frame_bytes)
        self._file.read_into(t * self.frame_bytes, memoryview(raw))
        return torch.frombuffer(raw, dtype=torch.uint8).view(self.dtype).reshape(self.shape).clone()

    def close(self) -> None:
        self._file.close()
