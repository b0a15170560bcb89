"""Kernelised memory read (KM, Mask-Propagation ``--use_km``), as a drop-in memory reader.

For every memory position n, the query position it matches best (argmax of its affinity row) is the
centre of a 2-D Gaussian over the query grid (σ in 1/16 feature cells, 5.6 in the original). The
memory softmax is then ``exp(affinity − column max) · gauss`` renormalised, over the ``top_k``
largest weighted entries (or all of them when ``top_k`` is None). No parameters: swapping it in
(:func:`use_kernelised_memory`) leaves the state dict unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from model.propagation.memory import EvalMemoryReader, readout, scaled_affinity

KM_SIGMA = 5.6


def query_gaussians(affinity: torch.Tensor, h: int, w: int, sigma: float) -> torch.Tensor:
    """``affinity`` ``B×N×(h·w)`` → ``B×N×(h·w)``: for memory position n a Gaussian centred on its
    best-matching query cell."""
    best = affinity.argmax(dim=2)                                   # B×N
    cy = torch.div(best, w, rounding_mode="floor").to(affinity.dtype).unsqueeze(2)
    cx = (best % w).to(affinity.dtype).unsqueeze(2)
    ys = torch.arange(h, device=affinity.device, dtype=affinity.dtype).repeat_interleave(w).view(1, 1, h * w)
    xs = torch.arange(w, device=affinity.device, dtype=affinity.dtype).repeat(h).view(1, 1, h * w)
    return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))


def kernelised_softmax(affinity: torch.Tensor, gauss: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Gaussian-weighted (top-k) softmax over dim 1 of ``affinity`` ``B×N×M``."""
    weighted = torch.exp(affinity - affinity.amax(dim=1, keepdim=True)) * gauss
    if top_k is None:
        return weighted / weighted.sum(dim=1, keepdim=True)
    if affinity.shape[1] < top_k:
        raise ValueError(f"top-k memory read needs at least {top_k} memory positions, got {affinity.shape[1]}")
    values, indices = torch.topk(weighted, k=top_k, dim=1)
    values = values / values.sum(dim=1, keepdim=True)
    return torch.zeros_like(affinity).scatter_(1, indices, values)


class KernelisedMemoryReader(EvalMemoryReader):
    """``forward(mk B×CK×T×h×w, mv B×CV×T×h×w, qk 1×CK×h×w) -> B×CV×h×w`` with the KM softmax."""

    def __init__(self, top_k: int | None = 50, sigma: float = KM_SIGMA):
        super().__init__(top_k)
        self.sigma = float(sigma)

    def forward(self, mk: torch.Tensor, mv: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
        b, ck, t, h, w = mk.shape
        cv = mv.shape[1]
        affinity = scaled_affinity(mk.reshape(b, ck, t * h * w), qk.reshape(1, ck, h * w))
        weights = kernelised_softmax(affinity, query_gaussians(affinity, h, w, self.sigma), self.top_k)
        return readout(mv.reshape(b, cv, t * h * w), weights).view(b, cv, h, w)


def use_kernelised_memory(prop_net: nn.Module, sigma: float = KM_SIGMA) -> nn.Module:
    """Replace ``prop_net.memory`` (an :class:`EvalMemoryReader`) by a KM reader with the same top-k."""
    prop_net.memory = KernelisedMemoryReader(prop_net.memory.top_k, sigma)
    return prop_net
