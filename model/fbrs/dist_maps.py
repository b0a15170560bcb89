"""Click distance maps of f-BRS, vectorised in torch (replaces the original's Cython BFS).

The original (``cpu_dist_maps=True``) rounds every click to a pixel with Python's ``round`` (half to
even) of its float32 value, seeds a 4-neighbour BFS from every click whose rounded row is >= 0 and
stores, per pixel, the squared distance to the seed that reached it, divided by ``norm_radius``².
That BFS approximates the exact minimum over the clicks (differences <= 4e-9 on the fixtures); we
compute the exact minimum, in float32 as the original evaluates each distance. Seeds outside the image only spread if a 4-neighbour is inside it
(the BFS never visits outside pixels), which :func:`seed_reaches_image` reproduces.
"""
from __future__ import annotations

import torch
from torch import nn

NO_CLICK = 1e6  # value of a layer that has no (valid) click


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Python ``round`` of float values (half to even) — ``torch.round`` implements the same rule."""
    return torch.round(x)


def seed_reaches_image(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Which rounded seeds the original BFS uses: row >= 0 and inside or 4-adjacent to the image."""
    in_r = (rows >= 0) & (rows < height)
    in_c = (cols >= 0) & (cols < width)
    return (in_r & in_c) | (in_r & ((cols == -1) | (cols == width))) | (in_c & (rows == height))


def click_distance_maps(points: torch.Tensor, height: int, width: int, norm_radius: float) -> torch.Tensor:
    """Normalised squared distance to the nearest click of each sign.

    points: B×2N×2 (row, col), first N positive, last N negative, (-1, -1) = unused.
    Returns B×2×height×width float32 (1e6 where a layer has no valid click), before sqrt/tanh.
    """
    b, two_n, _ = points.shape
    n = two_n // 2
    p = round_half_even(points.detach().to(torch.float32))
    rows, cols = p[..., 0], p[..., 1]
    valid = seed_reaches_image(rows, cols, height, width)
    r = torch.arange(height, dtype=torch.float32, device=points.device)
    c = torch.arange(width, dtype=torch.float32, device=points.device)
    # separable squared distances (B, 2N, H) + (B, 2N, W), in float32 like the original
    # (bitwise equal to it where its BFS finds the nearest seed); invalid seeds pushed beyond NO_CLICK
    dr = ((r.view(1, 1, -1) - rows.unsqueeze(-1)) / norm_radius) ** 2
    dc = ((c.view(1, 1, -1) - cols.unsqueeze(-1)) / norm_radius) ** 2
    dr = torch.where(valid.unsqueeze(-1), dr, torch.full_like(dr, 2 * NO_CLICK))
    dr = dr.view(b, 2, n, height, 1)
    dc = dc.view(b, 2, n, 1, width)
    out = torch.full((b, 2, height, width), NO_CLICK, dtype=torch.float32, device=points.device)
    for k in range(n):  # running minimum: no B×2×N×H×W temporary
        torch.minimum(out, dr[:, :, k] + dc[:, :, k], out=out)
    return out


class DistMaps(nn.Module):
    """``forward(x B×C×H×W, points B×2N×2) -> B×2×H×W`` click features ``tanh(2·sqrt(d))``."""

    def __init__(self, norm_radius: float = 260.0, spatial_scale: float = 1.0):
        super().__init__()
        self.norm_radius = norm_radius
        self.spatial_scale = spatial_scale

    def forward(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        d = click_distance_maps(points, x.shape[2], x.shape[3], self.spatial_scale * self.norm_radius)
        return d.sqrt_().mul_(2).tanh_()
