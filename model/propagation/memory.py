"""Space-time memory reading: key affinity, (top-k) softmax over memory positions, value readout.

All functions have no parameters. Memory positions run along dim 1 of an affinity
``B×N×M`` (N = T·h·w memory cells, M = h·w query cells); every query column sums to 1.

The top-k readout reads one object's memory values as a table of N rows of CV floats. Its fastest
input is a ``B×CV×N`` tensor whose storage is cell-major (stride 1 along CV, as the inference memory
bank keeps it), so the table is a view; it also takes a :class:`RowSource`, an object that hands out
the selected rows only (the inference core's bank when part of it lives outside RAM). The network
itself never does I/O: the row source does.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

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


@runtime_checkable
class RowSource(Protocol):
    """One object's memory values as ``num_rows`` rows of ``channels`` floats (row = memory cell, in
    the order of the keys' N axis). :func:`top_k_readout` asks only for the rows it selected."""

    @property
    def num_rows(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def gather_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` (int64, any order, repeats allowed, length L) → contiguous ``L×channels``
        tensor, row i = row ``indices[i]``, bit for bit."""
        ...


GATHER_BYTES = 16 * 2 ** 20
"""Bytes of memory rows :func:`top_k_readout` gathers at a time. Gathering all ``M·top_k`` rows of a
frame at once (166 MB for one object at 480p) into a new tensor costs a page fault per page and a pass
through main memory; a reused buffer of this size stays mapped and mostly in cache. 2 threads, 480p,
one object: 60 ms → 15 ms (float32), 34–42 ms → 13 ms (bfloat16), whatever the memory's length."""


def top_k_readout(mk: torch.Tensor, mv: torch.Tensor | RowSource, qk: torch.Tensor, top_k: int,
                  chunk_bytes: int = 64 * 2 ** 20, gather_bytes: int = GATHER_BYTES) -> torch.Tensor:
    """Top-k memory readout without the dense ``N×M`` weight matrix.

    mk: ``B×CK×N``, mv: ``B×CV×N`` (or, with B = 1, a :class:`RowSource` of N rows), qk: ``B×CK×M``
    or ``1×CK×M`` → ``B×CV×M``. Equal to
    ``readout(mv, top_k_softmax_(scaled_affinity(mk, qk), top_k))`` up to the order of a sum of ``top_k``
    terms: each query cell gathers its ``top_k`` memory values instead of multiplying ``CV×N`` values by
    a column that is zero in all but ``top_k`` places (``N/top_k`` times less arithmetic), and the
    affinity is computed ``chunk_bytes`` of query columns at a time, so the transient memory stays
    bounded however long the memory grows (a 1000-frame clip reaches N = 324 000 cells at 480p).
    Tensor values are gathered ``gather_bytes`` of rows at a time into one reused buffer (see
    :data:`GATHER_BYTES`); the numbers do not depend on either size.
    """
    b, ck, n = mk.shape
    m = qk.shape[-1]
    rows: RowSource | None = None
    if isinstance(mv, torch.Tensor):
        cv, dtype = mv.shape[1], mv.dtype
    else:
        rows, cv, dtype = mv, mv.channels, mv.dtype
        if b != 1 or rows.num_rows != n:
            raise ValueError(f"a row source reads one object: got B = {b}, {rows.num_rows} rows for {n} keys")
    if n < top_k:
        raise ValueError(f"top-k memory read needs at least {top_k} memory positions, got {n} "
                         "(the frame is too small: use a larger input or fewer top-k)")
    # the query is scaled before the product, as the original does; the affinity is computed
    # transposed (query cells × memory cells) so that top-k runs along contiguous memory (3× faster)
    q_rows = (qk.expand(b, -1, -1) / math.sqrt(ck)).transpose(1, 2)           # B×M×CK
    # gathering rows of an N×CV table is contiguous, columns of CV×N would not be; for cell-major
    # values (the memory bank's layout) the table is a view and this copies nothing
    table = mv.transpose(1, 2).contiguous() if rows is None else None
    out = mk.new_empty((b, cv, m), dtype=dtype)
    columns = max(1, min(m, chunk_bytes // max(1, n * mk.element_size())))

    def select(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax weights and memory rows of query columns start:stop, both ``B×c×k``."""
        affinity = torch.bmm(q_rows[:, start:stop], mk)                         # B×c×N
        values, indices = torch.topk(affinity, k=top_k, dim=2)                  # B×c×k, sorted
        del affinity
        weights = torch.exp(values - values[:, :, :1])
        weights /= torch.sum(weights, dim=2, keepdim=True)
        return weights, indices

    def mix(start: int, stop: int, weights: torch.Tensor, picked: torch.Tensor) -> None:
        """``picked`` ``B×(c·k)×CV`` (contiguous) → columns start:stop of ``out``."""
        picked = picked.view(b, stop - start, top_k, cv)
        mixed = torch.matmul(weights.unsqueeze(2).to(picked.dtype), picked)    # B×c×1×CV
        out[:, :, start:stop] = mixed.squeeze(2).transpose(1, 2)

    if rows is None:
        row_offsets = torch.arange(b, device=mk.device).view(b, 1, 1) * n
        flat_table = table.view(b * n, cv)
        span = max(1, min(columns, gather_bytes // (b * top_k * cv * out.element_size())))
        buffer = out.new_empty((b * span * top_k, cv))
        for start in range(0, m, columns):
            stop = min(m, start + columns)
            weights, indices = select(start, stop)
            rows_of = indices + row_offsets                                           # B×c×k
            for first in range(0, stop - start, span):
                last = min(stop - start, first + span)
                # whole rows copied by index_select from the (B·N)×CV table: the same rows as an
                # element-wise gather, 2× (float32) to 6× (bfloat16) faster
                picked = buffer[:b * (last - first) * top_k]
                torch.index_select(flat_table, 0, rows_of[:, first:last].reshape(-1), out=picked)
                mix(start + first, start + last, weights[:, first:last], picked.view(b, -1, cv))
        return out
    # a row source may have to fetch its rows from a file: ask for several chunks' rows at once (fewer,
    # longer reads), at most half of chunk_bytes of gathered values; the chunks and their products are
    # the same as above, so the numbers are too
    group = _row_group(columns, top_k, cv, out.element_size(), chunk_bytes)
    for first in range(0, m, columns * group):
        bounds = [(s, min(m, s + columns)) for s in range(first, min(m, first + columns * group), columns)]
        selected = [select(start, stop) for start, stop in bounds]
        picked = rows.gather_rows(torch.cat([indices.reshape(-1) for _, indices in selected]))  # (Σc·k)×CV
        offset = 0
        for (start, stop), (weights, _) in zip(bounds, selected):
            size = (stop - start) * top_k
            mix(start, stop, weights, picked[offset:offset + size].unsqueeze(0))
            offset += size
    return out


def _row_group(columns: int, top_k: int, cv: int, element_size: int, chunk_bytes: int) -> int:
    """Chunks whose rows a row source fetches at once: half of ``chunk_bytes`` of gathered values (the
    source may hold a second copy of the rows it read while it assembles them)."""
    return max(1, chunk_bytes // 2 // max(1, columns * top_k * cv * element_size))


def top_k_readout_scratch_bytes(n: int, m: int, cv: int, top_k: int, *, element_size: int = 4,
                                chunk_bytes: int = 64 * 2 ** 20, gather_bytes: int = GATHER_BYTES,
                                row_source: bool = False) -> int:
    """Bound of the transient bytes one :func:`top_k_readout` call allocates besides its ``B×CV×M``
    output, for B = 1, N = ``n`` memory cells, M = ``m`` query cells: the affinity chunk and its top-k,
    and the gathered rows (with a row source: a group of chunks' rows, and as much again for the rows
    the source reads and reorders). Cell-major tensor values cost no table copy."""
    columns = max(1, min(m, chunk_bytes // max(1, n * element_size)))
    affinity = columns * n * element_size
    selected = columns * top_k * (2 * element_size + 8)              # values, weights, int64 indices
    picked = columns * top_k * cv * element_size
    if not row_source:
        span = max(1, min(columns, gather_bytes // (top_k * cv * element_size)))
        return affinity + selected + 2 * span * top_k * cv * element_size   # gather buffer, its mix
    group = min(_row_group(columns, top_k, cv, element_size, chunk_bytes), -(-m // columns))
    return max(affinity + group * selected, group * (selected + 3 * picked))


class EvalMemoryReader(nn.Module):
    """Read one object's memory for a query frame.

    ``forward(mk B×CK×T×h×w, mv B×CV×T×h×w, qk 1×CK×h×w or B×CK×h×w) -> B×CV×h×w``.
    The propagation network calls it with B = 1 per object, as the original does; training reads a
    batch of samples at once (one query per sample). With top-k the readout gathers the selected
    memory values (:func:`top_k_readout`); without, it is the dense softmax product. ``mv`` may also
    be a sequence of B = 1 :class:`RowSource` (top-k inference only).
    """

    def __init__(self, top_k: int | None = 50):
        super().__init__()
        self.top_k = top_k

    def forward(self, mk: torch.Tensor, mv: torch.Tensor | Sequence[RowSource], qk: torch.Tensor) -> torch.Tensor:
        b, ck, t, h, w = mk.shape
        mk, qk = mk.reshape(b, ck, t * h * w), qk.reshape(qk.shape[0], ck, h * w)
        top_k = self.top_k is not None and not torch.is_grad_enabled()
        if not isinstance(mv, torch.Tensor):
            if not top_k or len(mv) != 1 or b != 1:
                raise ValueError("memory values as a row source need B = 1 and a top-k read without autograd")
            return top_k_readout(mk, mv[0], qk, self.top_k).view(b, mv[0].channels, h, w)
        cv = mv.shape[1]
        # a view for cell-major values (stride 1 along CV) as well as for channel-major ones
        mv = mv.reshape(b, cv, t * h * w)
        if top_k:
            return top_k_readout(mk, mv, qk, self.top_k).view(b, cv, h, w)
        affinity = memory_softmax(scaled_affinity(mk, qk), self.top_k)
        # the dense product reads channel-major values, whatever layout the caller keeps
        return readout(mv.contiguous(), affinity).view(b, cv, h, w)


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
