"""Image normalisation (the only place this is done in the project).

Frames are kept as uint8 ``H×W×3`` RGB and normalised per use: ``x = u8 / 255`` then
``(x - mean) / std`` with the ImageNet statistics, evaluated in float32 (subtract, then divide), which
is bit-identical to the original's ``ToTensor`` + torchvision ``Normalize``.
"""
from __future__ import annotations

import numpy as np
import torch

IM_MEAN = (0.485, 0.456, 0.406)
IM_STD = (0.229, 0.224, 0.225)
# Fill colour (0-255) used by the training augmentations for affine/crop borders.
IM_MEAN_255 = (124, 116, 104)


def normalize_frames(frames_u8, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 RGB frames ``T×H×W×3`` (numpy or tensor; a single ``H×W×3`` also works) →
    normalised float32 ``T×3×H×W`` (``1×3×H×W`` for a single frame) on ``device``."""
    if not isinstance(frames_u8, torch.Tensor):
        frames_u8 = np.asarray(frames_u8)
        if not frames_u8.flags.writeable:
            # read-only frames (e.g. a cached decoded frame) are only read here; copying avoids torch's
            # warning about non-writable arrays at the cost of one uint8 frame
            frames_u8 = frames_u8.copy()
    x = torch.as_tensor(frames_u8)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 RGB frames, got {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames of shape T×H×W×3, got {tuple(x.shape)}")
    if device is not None:
        x = x.to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IM_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IM_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def images_to_torch(frames_u8, device: torch.device | str = "cpu") -> torch.Tensor:
    """The original GUI's helper: ``T×H×W×3`` uint8 → normalised ``1×T×3×H×W`` float32."""
    return normalize_frames(frames_u8, device).unsqueeze(0)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: ``…×3×H×W`` float → values in [0, 1]."""
    mean = torch.tensor(IM_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IM_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
