"""One S2M training step (Scribble-to-Mask ``model/model.py``): image + previous mask + scribbles →
one logit → sigmoid → background-included 2-channel logits; bootstrapped CE against the ground truth."""
from __future__ import annotations

from typing import Mapping

import torch

from model.aggregate import aggregate_wbg_channel
from model.losses import BootstrappedCE, compute_tensor_iu

S2M_START_WARM = 10000
S2M_END_WARM = 30000


def s2m_forward(net: torch.nn.Module, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``rgb`` B×3×H×W, ``seg`` B×1×H×W, ``srb`` B×2×H×W → ``logits`` B×2×H×W (bg, object) and ``mask``
    B×2×H×W probabilities."""
    inputs = torch.cat([data["rgb"], data["seg"], data["srb"]], 1)
    prob = torch.sigmoid(net(inputs))
    logits, mask = aggregate_wbg_channel(prob, keep_bg=True)
    return {"logits": logits, "mask": mask}


class S2MLossComputer:
    def __init__(self, start_warm: int = S2M_START_WARM, end_warm: int = S2M_END_WARM):
        self.bce = BootstrappedCE(start_warm, end_warm)

    def compute(self, data: Mapping[str, torch.Tensor], it: int) -> dict[str, torch.Tensor | float]:
        loss, p = self.bce(data["logits"], data["cls_gt"], it)
        inter, union = compute_tensor_iu(data["mask"][:, 1:2] > 0.5, data["gt"] > 0.5)
        return {"total_loss": loss, "p": p, "hide_iou/i": inter, "hide_iou/u": union}
