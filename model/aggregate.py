"""Soft aggregation of per-object probabilities into a background-included distribution.

All functions take ``prob``: ``K×1×H×W`` (objects, no background) and return ``(K+1)×1×H×W``
(``keep_bg=True``) or ``K×1×H×W`` (``keep_bg=False``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-7


def _aggregate(bg: torch.Tensor, prob: torch.Tensor, keep_bg: bool, hard: bool) -> torch.Tensor:
    new_prob = torch.cat([bg, prob], 0).clamp(_EPS, 1 - _EPS)
    logits = torch.log(new_prob / (1 - new_prob))
    if hard:
        # ×1000 turns the softmax into (almost) a one-hot argmax, as the original does
        logits = logits * 1000
    out = F.softmax(logits, dim=0)
    return out if keep_bg else out[1:]


def hard_labels(prob: torch.Tensor) -> torch.Tensor:
    """Index of the most probable channel along dim 0: ``C×…`` → ``…`` int64; on ties the first.

    Same result as ``torch.argmax(prob, dim=0)``, but ``torch.max`` reduces the leading dimension
    channel by channel over contiguous planes, where argmax walks it with a stride: about 20× faster
    on a ``3×1×480×864`` frame (4 ms against 75 ms), which every propagated frame pays.
    """
    return torch.max(prob, dim=0).indices


def aggregate_wbg(prob: torch.Tensor, keep_bg: bool = False, hard: bool = False) -> torch.Tensor:
    """Background = Π_k (1 − p_k); then softmax over logit(x) of [bg, p_1..p_K]."""
    bg = torch.prod(1 - prob, dim=0, keepdim=True)
    return _aggregate(bg, prob, keep_bg, hard)


def aggregate_sbg(prob: torch.Tensor, keep_bg: bool = False, hard: bool = False) -> torch.Tensor:
    """Like :func:`aggregate_wbg` with a fixed background probability of 0.5 (logit 0)."""
    bg = torch.full_like(prob[0:1], 0.5)
    return _aggregate(bg, prob, keep_bg, hard)


def aggregate_wbg_channel(prob: torch.Tensor, keep_bg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched version along dim 1 (training): ``B×K×H×W`` → (logits, probs) ``B×(K+1)×H×W``."""
    bg = torch.prod(1 - prob, dim=1, keepdim=True)
    new_prob = torch.cat([bg, prob], 1).clamp(_EPS, 1 - _EPS)
    logits = torch.log(new_prob / (1 - new_prob))
    probs = F.softmax(logits, dim=1)
    if keep_bg:
        return logits, probs
    return logits, probs[:, 1:]
