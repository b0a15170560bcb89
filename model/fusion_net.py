"""MiVOS difference-aware fusion network (39,905 parameters, keys = ``fusion.pth``)."""
from __future__ import annotations

import torch
from torch import nn


class FusionNet(nn.Module):
    """``forward(im B×3×H×W, seg1 B×1×H×W, seg2 B×1×H×W, attn B×2×H×W, time B×2) -> logits B×1×H×W``.

    ``seg1``: the object's probability before this interaction's propagation, ``seg2``: the newly
    propagated probability, ``attn``: positive/negative interaction differences transported to
    this frame, ``time``: ``[nc, nr]`` normalised distances to the interacted frames (broadcast to
    constant planes). Returns raw logits; the caller applies the sigmoid.
    """

    def __init__(self):
        super().__init__()
        # in-place ReLUs and residual adds: every activation is full resolution, and writing into the
        # tensor just computed instead of a new one saves a pass over fresh memory (same numbers)
        self.conv1 = nn.Sequential(nn.Conv2d(9, 32, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(32, 32, kernel_size=3, padding=1))
        self.conv3 = nn.Sequential(nn.Conv2d(32, 32, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(32, 32, kernel_size=3, padding=1))
        self.relu = nn.ReLU(inplace=True)
        self.final_conv = nn.Conv2d(32, 1, kernel_size=3, padding=1)

    def forward(self, im: torch.Tensor, seg1: torch.Tensor, seg2: torch.Tensor, attn: torch.Tensor,
                time: torch.Tensor) -> torch.Tensor:
        h, w = im.shape[-2:]
        time_planes = time[:, :, None, None].expand(-1, -1, h, w)
        x = self.conv1(torch.cat([im, seg1, seg2, attn, time_planes], 1))
        x = self.relu(self.conv2(x).add_(x))   # = relu(x + conv2(x)): float addition commutes
        x = self.relu(self.conv3(x).add_(x))
        return self.final_conv(x)
