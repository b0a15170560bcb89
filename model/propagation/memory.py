"""Space-time memory reading: key affinity, (top-k) softmax over memory positions, value readout.

All functions have no parameters. Memory positions run along dim 1 of an affinity
``B×N×M`` (N = T·h·w memory cells, M = h·w query cells); every query column sums to 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_affinity(mk: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
    """``mkᵀ · (qk / sqrt(CK))``.

    mk: ``B×CK×N`` memory keys; qk: ``B×CK×M`` (or ``1×CK×M``, shared by all B) query keys.
    Returns ``B×N×M``. The query is scaled before the product, as the original does.
    """
    b, ck, _ = mk.shape
    qk = qk.expand(b, -1, -1) / math.sqrt(ck)
    return torch.bmm(mk.transpose(1, 2), qk)


def top_k_softmax_(affinity: torch.Tensor, top_k: int) -> torch.Tensor:
    """Softmax over the ``top_k`` largest entries of each column (dim 1), zeros elsewhere.

    ``affinity`` ``B×N×M`` is overwritten and returned (the dense result is what the readout's
    matrix product consumes). Needs ``N >= top_k``.
    """
    n = affinity.shape[1]
    if n < top_k:
        raise ValueError(f"top-k memory read needs at least {top_k} memory positions, got {n} "
                         "(the frame is too small: use a larger input or fewer top-k)")
    values, indices = torch.topk(affinity, k=top_k, dim=1)
    # topk is sorted, so row 0 is the column maximum
    weights = torch.exp(values - values[:, :1])
    weights /= torch.sum(weights, dim=1, keepdim=True)
    return affinity.zero_().scatter_(1, indices, weights.to(affinity.dtype))


def memory_softmax(affinity: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Top-k softmax (``top_k`` int, in place) or plain softmax over dim 1 (``top_k=None``)."""
    if top_k is None:
        return F.softmax(affinity, dim=1)
    return top_k_softmax_(affinity, top_k)


def readout(values: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Weighted sum of memory values: ``values B×CV×N``, ``affinity B×N×M`` → ``B×CV×M``."""
    return torch.bmm(values, affinity)


def top_k_readout(mk: torch.Tensor, mv: torch.Tensor, qk: torch.Tensor, top_k: int,
                  chunk_bytes: int = 64 * 2 ** 20) -> torch.Tensor:
    """Top-k memory readout without the dense ``N×M`` weight matrix.

    mk: ``B×CK×N``, mv: ``B×CV×N``, qk: ``B×CK×M`` or ``1×CK×M`` → ``B×CV×M``. Equal to
    ``readout(mv, top_k_softmax_(scaled_affinity(mk, qk), top_k))`` up to the order of a sum of ``top_k``
    terms: each query cell gathers its ``top_k`` memory values instead of multiplying ``CV×N`` values by
    a column that is zero in all but ``top_k`` places (``N/top_k`` times less arithmetic), and the
    affinity is computed ``chunk_bytes`` of query columns at a time, so the transient memory stays
    bounded however long the memory grows (a 1000-frame clip reaches N = 324 000 cells at 480p).
    """
    b, ck, n = mk.shape
    cv, m = mv.shape[1], qk.shape[-1]
    if n < top_k:
        raise ValueError(f"top-k memory read needs at least {top_k} memory positions, got {n} "
                         "(the frame is too small: use a larger input or fewer top-k)")
    # the query is scaled before the product, as the original does; the affinity is computed
    # transposed (query cells × memory cells) so that top-k runs along contiguous memory (3× faster)
    q_rows = (qk.expand(b, -1, -1) / math.sqrt(ck)).transpose(1, 2)           # B×M×CK
    # gathering rows of an N×CV table is contiguous, columns of CV×N would not be
    table = mv.transpose(1, 2).contiguous()
    out = mv.new_empty((b, cv, m))
    columns = max(1, min(m, chunk_bytes // max(1, n * mk.element_size())))
    for start in range(0, m, columns):
        stop = min(m, start + columns)
        affinity = torch.bmm(q_rows[:, start:stop], mk)                         # B×c×N
        values, indices = torch.topk(affinity, k=top_k, dim=2)                  # B×c×k, sorted
        del affinity
        weights = torch.exp(values - values[:, :, :1])
        weights /= torch.sum(weights, dim=2, keepdim=True)
        c = stop - start
        picked = torch.gather(table, 1, indices.reshape(b, c * top_k, 1).expand(-1, -1, cv))  # B×(c·k)×CV
        picked = picked.view(b, c, top_k, cv)
        mixed = torch.matmul(weights.unsqueeze(2).to(picked.dtype), picked)    # B×c×1×CV
        out[:, :, start:stop] = mixed.squeeze(2).transpose(1, 2)
    return out


class EvalMemoryReader(nn.Module):
    """Read one object's memory for a query frame.

    ``forward(mk B×CK×T×h×w, mv B×CV×T×h×w, qk 1×CK×h×w or B×CK×h×w) -> B×CV×h×w``.
    The propagation network calls it with B = 1 per object, as the original does; training reads a
    batch of samples at once (one query per sample). With top-k the readout gathers the selected
    memory values (:func:`top_k_readout`); without, it is the dense softmax product.
    """

    def __init__(self, top_k: int | None = 50):
        super().__init__()
        self.top_k = top_k

    def forward(self, mk: torch.Tensor, mv: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
        b, ck, t, h, w = mk.shape
        cv = mv.shape[1]
        mk, mv, qk = mk.reshape(b, ck, t * h * w), mv.reshape(b, cv, t * h * w), qk.reshape(qk.shape[0], ck, h * w)
        if self.top_k is not None and not torch.is_grad_enabled():
            return top_k_readout(mk, mv, qk, self.top_k).view(b, cv, h, w)
        affinity = memory_softmax(scaled_affinity(mk, qk), self.top_k)
        return readout(mv, affinity).view(b, cv, h, w)


class AttentionMemory(nn.Module):
    """Full-softmax affinity between one memory frame and a query frame.

    ``forward(mk B×CK×h×w (or B×CK×1×h×w), qk B×CK×h×w (or 1×CK×h×w)) -> W B×hw×hw``; column q of
    ``W`` is a distribution over memory cells.
    """

    def forward(self, mk: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
        b, ck = mk.shape[:2]
        affinity = scaled_affinity(mk.reshape(b, ck, -1), qk.reshape(qk.shape[0], ck, -1))
        return F.softmax(affinity, dim=1)


def transport_mask(mask: torch.Tensor, affinity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Carry a full-resolution map through an affinity to the query frame.

    mask: ``B×1×H×W`` (memory frame, H and W multiples of 16); affinity: ``B×hw×hw`` or ``1×hw×hw``
    (memory × query, h = H/16) ; size: the query's (H, W). The map is area-downsampled to 1/16,
    multiplied by ``affinity`` and returned at 1/16 as ``B×1×h×w`` (callers upsample).
    """
    b = mask.shape[0]
    nh, nw = size[0] // 16, size[1] // 16
    small = F.interpolate(mask, size=(nh, nw), mode="area").view(b, 1, nh * nw)
    return (small @ affinity).view(b, 1, nh, nw)


def attention_maps(affinity: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """Positive and negative difference maps transported through ``affinity``.

    ``pos_mask``/``neg_mask`` ``B×1×H×W``; ``affinity`` ``B×hw×hw`` → ``B×2×H×W`` (bilinear ×16).
    """
    b, _, h, w = pos_mask.shape
    pos_map = transport_mask(pos_mask, affinity, (h, w))
    neg_map = transport_mask(neg_mask, affinity, (h, w))
    attn = torch.cat([pos_map, neg_map], 1)
    return F.interpolate(attn, size=(h, w), mode="bilinear", align_corners=False)
