"""f-BRS-B optimisation objective: per-channel scale/bias of the head features, click loss.

``ScaleBiasOptimizer`` is the callable handed to SciPy's ``fmin_l_bfgs_b``: for a parameter vector
(scale ⊕ bias, float64) it returns the loss and its gradient, keeps the lowest-loss prediction, and
returns a zero gradient (which stops L-BFGS) once every click is satisfied or the mask stopped
changing (IoU with the previous evaluation's mask > 1 - ``min_iou_diff``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def brs_mask_loss(result: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                  eps: float = 1e-5) -> tuple[torch.Tensor, float, float]:
    """Mean squared (1 - p) over positive click pixels + mean squared p over negative ones.

    result, pos_mask, neg_mask: B×1×H×W. Returns (loss, max |positive error|, max |negative error|).
    """
    pos_diff = (1 - result) * pos_mask
    pos_target = torch.sum(pos_diff ** 2) / (torch.sum(pos_mask) + eps)
    neg_diff = result * neg_mask
    neg_target = torch.sum(neg_diff ** 2) / (torch.sum(neg_mask) + eps)
    with torch.no_grad():
        f_max_pos = torch.max(torch.abs(pos_diff)).item()
        f_max_neg = torch.max(torch.abs(neg_diff)).item()
    return pos_target + neg_target, f_max_pos, f_max_neg


def masks_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-item IoU of two boolean B×… masks (items with an empty union are left out)."""
    dims = list(range(1, b.dim()))
    union = torch.mean((a | b).float(), dim=dims).cpu().numpy()
    intersection = torch.mean((a & b).float(), dim=dims).cpu().numpy()
    nonzero = union > 0
    return intersection[nonzero] / union[nonzero]


class ScaleBiasOptimizer:
    """L-BFGS objective over ``x = [scale (C·B), bias (C·B)]``; features become ``f·(1+scale) + bias``."""

    def __init__(self, optimizer_params: dict, prob_thresh: float = 0.49, reg_weight: float = 1e-3,
                 reg_bias_weight: float = 10.0, min_iou_diff: float = 0.01):
        self.optimizer_params = optimizer_params
        self.prob_thresh = prob_thresh
        self.reg_weight = reg_weight
        self.reg_bias_weight = reg_bias_weight
        self.min_iou_diff = min_iou_diff
        self.best_prediction: torch.Tensor | None = None
        self._best_loss: np.ndarray | None = None
        self._get_prediction_logits: LogitsFn | None = None
        self._click_masks: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_mask: torch.Tensor | None = None
        self.device: torch.device | str = "cpu"
        self.num_evaluations = 0

    def init_click(self, get_prediction_logits: LogitsFn, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                   device: torch.device | str) -> None:
        self.best_prediction = None
        self._best_loss = None
        self._get_prediction_logits = get_prediction_logits
        self._click_masks = (pos_mask, neg_mask)
        self._last_mask = None
        self.device = device
        self.num_evaluations = 0

    def unpack_opt_params(self, opt_params: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        scale, bias = torch.chunk(opt_params, 2, dim=0)
        reg_loss = self.reg_weight * (torch.sum(scale ** 2) + self.reg_bias_weight * torch.sum(bias ** 2))
        return (1 + scale, bias), reg_loss

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.num_evaluations += 1
        opt_params = torch.from_numpy(x).float().to(self.device).requires_grad_(True)
        with torch.enable_grad():
            opt_vars, reg_loss = self.unpack_opt_params(opt_params)
            logits = self._get_prediction_logits(*opt_vars)
            result = torch.sigmoid(logits)
            pos_mask, neg_mask = self._click_masks
            loss, f_max_pos, f_max_neg = brs_mask_loss(result, pos_mask, neg_mask)
            loss = loss + reg_loss

        f_val = loss.detach().float().cpu().numpy()
        if self.best_prediction is None or f_val < self._best_loss:
            self.best_prediction = logits.detach()
            self._best_loss = f_val

        if f_max_pos < (1 - self.prob_thresh) and f_max_neg < self.prob_thresh:
            return f_val, np.zeros_like(x)  # every click satisfied

        current_mask = result.detach() > self.prob_thresh
        if self._last_mask is not None and self.min_iou_diff > 0:
            diff_iou = masks_iou(current_mask, self._last_mask)
            if len(diff_iou) > 0 and diff_iou.mean() > 1 - self.min_iou_diff:
                return f_val, np.zeros_like(x)  # mask no longer changes
        self._last_mask = current_mask

        loss.backward()
        return f_val, opt_params.grad.float().cpu().numpy().ravel().astype(np.float64)
