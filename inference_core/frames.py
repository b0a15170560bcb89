"""Frame access for the inference core: what a clip is, and how a frame reaches the network.

The core accepts either the original's input (an ImageNet-normalised float tensor ``1×T×3×H×W``) or a
*frame source*: any object with ``__len__`` and ``__getitem__(t) -> H×W×3 uint8 RGB`` (a numpy array
``T×H×W×3``, a list of frames, a lazy video reader). uint8 frames are normalised per use, so a long
clip costs 1 byte per pixel and channel instead of 4.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from util.image_util import normalize_frames
from util.tensor_util import Pad, apply_pad, compute_pad


@runtime_checkable
class FrameSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, t: int) -> np.ndarray: ...


class PaddedFrames:
    """Normalised, /16-padded frames ``1×3×H'×W'`` on ``device``, with a small LRU of recent frames.

    ``images``: a normalised float tensor ``1×T×3×H×W`` (kept whole on ``device`` when
    ``keep_all_on_device``, as the original's mem_profile 0/1), or a :class:`FrameSource` of uint8
    frames (normalised on use, the last ``cache_frames`` kept).
    """

    def __init__(self, images: torch.Tensor | FrameSource | Sequence[np.ndarray], device: torch.device,
                 keep_all_on_device: bool, cache_frames: int = 4):
        self.device = device
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_frames = max(1, cache_frames)
        self._dense: torch.Tensor | None = None
        self._source = None
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            if images.dim() == 4:
                images = images.unsqueeze(0)
            if images.dim() != 5 or images.shape[0] != 1 or images.shape[2] != 3:
                raise ValueError(f"images must be a normalised float tensor of shape 1×T×3×H×W, "
                                 f"got {tuple(images.shape)}")
            if images.numel() and float(images.abs().amax()) > 20:
                raise ValueError("images look like raw 0-255 values, not ImageNet-normalised ones; "
                                 "pass uint8 frames (T×H×W×3) or use util.image_util.images_to_torch")
            self.t, self.h, self.w = images.shape[1], images.shape[-2], images.shape[-1]
            self.pad: Pad = compute_pad(self.h, self.w)
            dense = images[0]
            if keep_all_on_device:
                # pad once, up front: every later access is a view
                self._dense = apply_pad(dense.to(device), self.pad)
            else:
                self._source_dense = dense  # CPU, unpadded
        else:
            if isinstance(images, torch.Tensor):  # a uint8 tensor T×H×W×3
                images = images.cpu().numpy()
            if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
                raise TypeError("images must be a normalised float tensor 1×T×3×H×W or a sequence of "
                                "H×W×3 uint8 frames")
            if len(images) == 0:
                raise ValueError("images: the clip has no frames")
            first = np.asarray(images[0])
            if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
                raise ValueError(f"frames must be H×W×3 uint8 RGB arrays, got {first.dtype} {first.shape}; "
                                 "float frames must be given as one normalised 1×T×3×H×W tensor")
            self._source = images
            self.t = len(images)
            self.h, self.w = first.shape[:2]
            self.pad = compute_pad(self.h, self.w)
        self.nh = self.h + self.pad[2] + self.pad[3]
        self.nw = self.w + self.pad[0] + self.pad[1]

    def __len__(self) -> int:
        return self.t

    def get(self, t: int) -> torch.Tensor:
        """Frame ``t`` normalised and padded: ``1×3×H'×W'`` float32 on the core's device."""
        if self._dense is not None:
            return self._dense[t:t + 1]
        hit = self._cache.get(t)
        if hit is not None:
            self._cache.move_to_end(t)
            return hit
        if self._source is not None:
            frame = np.asarray(self._source[t])
            if frame.shape[:2] != (self.h, self.w):
                raise ValueError(f"frame {t} is {frame.shape[1]}×{frame.shape[0]}, the clip is {self.w}×{self.h}: "
                                 "all frames must have the same size")
            x = normalize_frames(frame, self.device)
        else:
            x = self._source_dense[t:t + 1].to(self.device)
        x = apply_pad(x, self.pad)
        self._cache[t] = x
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return x
