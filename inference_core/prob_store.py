"""Per-frame object probabilities, background included: ``(K+1)×1×H'×W'`` per frame.

Frames never written read as the initial state (background 1e-7, objects 0) without being stored, so
memory grows with the frames actually propagated. ``dtype=torch.float32`` keeps the original's exact
numbers; ``"uint16"`` stores the K object channels quantised to 1/65535 (abs. error ≤ 7.7e-6) and
derives the background as ``1 − Σ objects`` (every stored distribution sums to 1: interaction masks and
aggregated outputs), i.e. ``K/(K+1)`` of half the memory, for long clips.
"""
from __future__ import annotations

import torch

BG_INIT = 1e-7


class ProbStore:
    def __init__(self, num_objects: int, t: int, nh: int, nw: int, device: torch.device,
                 storage: str = "float32"):
        if storage not in ("float32", "uint16"):
            raise ValueError(f"prob storage must be 'float32' or 'uint16', got {storage!r}")
        self.k, self.t, self.nh, self.nw = num_objects, t, nh, nw
        self.device = device
        self.storage = storage
        self._frames: dict[int, torch.Tensor] = {}

    def _initial(self, device: torch.device) -> torch.Tensor:
        p = torch.zeros((self.k + 1, 1, self.nh, self.nw), dtype=torch.float32, device=device)
        p[0] = BG_INIT
        return p

    def get(self, t: int, device: torch.device | None = None) -> torch.Tensor:
        """Probabilities of frame ``t`` as float32 ``(K+1)×1×H'×W'`` on ``device`` (default: storage device)."""
        device = device or self.device
        stored = self._frames.get(t)
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
            q = prob[1:].to(self.device).clamp(0, 1).mul(65535.0).round_().to(torch.int32).to(torch.uint16)
            self._frames[t] = q
        else:
            self._frames[t] = prob.to(device=self.device, dtype=torch.float32).clone()

    def release(self, t: int) -> None:
        """Drop frame ``t`` (it reads as the initial state again): lets a forward-only propagation
        keep O(1) frames of probabilities once results are written out."""
        self._frames.pop(t, None)

    def is_set(self, t: int) -> bool:
        return t in self._frames

    def add_object(self) -> None:
        """Append an empty channel for a new object to every stored frame."""
        self.k += 1
        for t, p in self._frames.items():
            self._frames[t] = torch.cat([p, torch.zeros_like(p[:1])], 0)

    def dense(self) -> torch.Tensor:
        """All frames as one float32 tensor ``(K+1)×T×1×H'×W'`` (the original's ``prob`` layout)."""
        return torch.stack([self.get(t) for t in range(self.t)], 1)

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._frames.values())
