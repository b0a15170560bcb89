"""Padding to multiples of 16 (the only place this is done in the project).

The networks downsample by 16, so every frame is zero-padded to H', W' divisible by 16. The pad is
split as evenly as possible with the odd pixel at the bottom/right, exactly as the original
`pad_divide_by`: ``pad = (left, right, top, bottom)`` (the order ``F.pad`` takes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Pad = tuple[int, int, int, int]


def compute_pad(h: int, w: int, d: int = 16) -> Pad:
    """Return ``(left, right, top, bottom)`` that makes an ``h x w`` image divisible by ``d``."""
    nh = h if h % d == 0 else h + d - h % d
    nw = w if w % d == 0 else w + d - w % d
    lh, lw = (nh - h) // 2, (nw - w) // 2
    return (lw, (nw - w) - lw, lh, (nh - h) - lh)


def pad_divide_by(x: torch.Tensor, d: int = 16) -> tuple[torch.Tensor, Pad]:
    """Zero-pad the last two dims of ``x`` (…×H×W) to multiples of ``d``; returns (padded, pad)."""
    pad = compute_pad(x.shape[-2], x.shape[-1], d)
    return apply_pad(x, pad), pad


def apply_pad(x: torch.Tensor, pad: Pad) -> torch.Tensor:
    """Zero-pad ``x`` (…×H×W) with a pad from :func:`compute_pad` (no copy when there is nothing to pad)."""
    return F.pad(x, pad) if any(pad) else x


def unpad(x: torch.Tensor, pad: Pad):
    """Crop a padded tensor or numpy array (…×H'×W') back; inverse of :func:`pad_divide_by`."""
    lw, uw, lh, uh = pad
    h, w = x.shape[-2], x.shape[-1]
    return x[..., lh:h - uh, lw:w - uw]
