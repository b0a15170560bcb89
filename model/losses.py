"""Training losses shared by the trainers: bootstrapped cross-entropy with the original warm-up, IoU hooks,
and the fusion module's per-sample loss."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def bootstrap_fraction(it: int, start_warm: int, end_warm: int, top_p: float = 0.15) -> float:
    """Fraction of the hardest pixels kept at iteration ``it``: 1 before ``start_warm``, then linear
    down to ``top_p`` at ``end_warm`` and constant after (p = top_p + (1-top_p)(end-it)/(end-start))."""
    if it < start_warm:
        return 1.0
    if it >= end_warm:  # also a zero-length warm-up (start == end): no division by zero
        return top_p
    return top_p + (1 - top_p) * ((end_warm - it) / (end_warm - start_warm))


class BootstrappedCE(nn.Module):
    """Cross-entropy averaged over the hardest ``p`` fraction of pixels (:func:`bootstrap_fraction`).

    ``forward(logits B×C×H×W, target B×H×W int64, it) -> (loss scalar, p)``. Before ``start_warm``
    it is the plain mean cross-entropy.
    """

    def __init__(self, start_warm: int, end_warm: int, top_p: float = 0.15):
        super().__init__()
        self.start_warm = start_warm
        self.end_warm = end_warm
        self.top_p = top_p

    def forward(self, logits: torch.Tensor, target: torch.Tensor, it: int) -> tuple[torch.Tensor, float]:
        if it < self.start_warm:
            return F.cross_entropy(logits, target), 1.0
        raw = F.cross_entropy(logits, target, reduction="none").view(-1)
        p = bootstrap_fraction(it, self.start_warm, self.end_warm, self.top_p)
        hardest, _ = torch.topk(raw, int(raw.numel() * p), sorted=False)
        return hardest.mean(), p


def compute_tensor_iu(seg: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union pixel counts of two boolean tensors (summed over everything)."""
    intersection = (seg & gt).float().sum()
    union = (seg | gt).float().sum()
    return intersection, union


def _iou_hook(values: Mapping[str, float]) -> tuple[str, float]:
    return "iou/iou", (values["hide_iou/i"] + 1) / (values["hide_iou/u"] + 1)


def _sec_iou_hook(values: Mapping[str, float]) -> tuple[str, float]:
    return "iou/sec_iou", (values["hide_iou/sec_i"] + 1) / (values["hide_iou/sec_u"] + 1)


IOU_HOOKS = [_iou_hook, _sec_iou_hook]


class FusionLossComputer:
    """The fusion trainer's loss: per sample, bootstrapped CE over (bg, obj1, obj2) logits when the
    sample has a second object, else over (bg, obj1); averaged over the batch. Warm-up from 20 % to
    50 % of the total iterations, as the original."""

    def __init__(self, iterations: int):
        self.bce = BootstrappedCE(start_warm=int(iterations * 0.2), end_warm=int(iterations * 0.5))

    def compute(self, data: Mapping[str, torch.Tensor], it: int) -> dict[str, torch.Tensor | float]:
        """``data``: ``logits`` B×3×H×W, ``mask`` B×3×H×W probabilities (bg first), ``cls_gt`` B×H×W,
        ``gt``/``gt2`` B×1×H×W, ``selector`` B×2. Returns ``total_loss``, ``p`` and the IoU sums."""
        losses: dict[str, torch.Tensor | float] = defaultdict(float)
        logits, cls_gt, selector = data["logits"], data["cls_gt"], data["selector"]
        b = logits.shape[0]
        has_second = (selector[:, 1] > 0.5).tolist()
        for j in range(b):
            channels = logits[j:j + 1] if has_second[j] else logits[j:j + 1, :2]
            loss, p = self.bce(channels, cls_gt[j:j + 1], it)
            losses["total_loss"] = losses["total_loss"] + loss / b
            losses["p"] = losses["p"] + p / b
        i, u = compute_tensor_iu(data["mask"][:, 1:2] > 0.5, data["gt"] > 0.5)
        losses["hide_iou/i"], losses["hide_iou/u"] = i, u
        i2, u2 = compute_tensor_iu(data["mask"][:, 2:3] > 0.5, data["gt2"] > 0.5)
        losses["hide_iou/sec_i"], losses["hide_iou/sec_u"] = i2, u2
        return dict(losses)
