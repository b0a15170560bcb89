"""One propagation-training step (Mask-Propagation ``model/model.py``): memorise frame 0 with its
ground truth, segment frame 1, memorise frame 1 with its *predicted* soft masks (gradients flow through),
segment frame 2 from both memories; bootstrapped CE on frames 1 and 2."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch

from model.losses import BootstrappedCE, compute_tensor_iu
from model.propagation.train_net import PropagationTrainingNetwork

# fixed for every stage in the original
PROP_START_WARM = 20000
PROP_END_WARM = 70000


def propagation_forward(net: PropagationTrainingNetwork | torch.nn.Module, data: Mapping[str, torch.Tensor],
                        single_object: bool) -> dict[str, torch.Tensor]:
    """``net``: the training network, possibly wrapped in DistributedDataParallel.

    ``data``: ``rgb`` B×3×3×H×W (3 frames), ``gt`` B×3×1×H×W, and for two objects ``sec_gt`` B×3×1×H×W and
    ``selector`` B×2. Returns ``logits_1``/``logits_2`` B×(K+1)×H×W and ``mask_1``/``mask_2`` B×K×H×W.
    """
    # every call goes through forward() so that DistributedDataParallel synchronises the gradients
    def memorize(*args):
        return net("memorize", *args)

    def segment(*args):
        return net("segment", *args)

    frames, masks = data["rgb"], data["gt"]
    out: dict[str, torch.Tensor] = {}
    if single_object:
        k0, v0 = memorize(frames[:, 0], masks[:, 0])
        logits1, prob1 = segment(frames[:, 1], k0, v0)
        k1, v1 = memorize(frames[:, 1], prob1[:, 0:1])
        keys, values = torch.cat([k0, k1], 2), torch.cat([v0, v1], 2)
        logits2, prob2 = segment(frames[:, 2], keys, values)
    else:
        sec, selector = data["sec_gt"], data["selector"]
        k01, v01 = memorize(frames[:, 0], masks[:, 0], sec[:, 0])
        k02, v02 = memorize(frames[:, 0], sec[:, 0], masks[:, 0])
        ref_k, ref_v = torch.stack([k01, k02], 1), torch.stack([v01, v02], 1)
        logits1, prob1 = segment(frames[:, 1], ref_k, ref_v, selector)
        p1, p2 = prob1[:, 0:1], prob1[:, 1:2]
        k11, v11 = memorize(frames[:, 1], p1, p2)
        k12, v12 = memorize(frames[:, 1], p2, p1)
        keys = torch.cat([ref_k, torch.stack([k11, k12], 1)], 3)
        values = torch.cat([ref_v, torch.stack([v11, v12], 1)], 3)
        logits2, prob2 = segment(frames[:, 2], keys, values, selector)
    out["logits_1"], out["mask_1"] = logits1, prob1
    out["logits_2"], out["mask_2"] = logits2, prob2
    return out


class PropagationLossComputer:
    """Per sample bootstrapped CE over (bg, obj1, obj2) when a second object exists, else (bg, obj1);
    frames 1 and 2 averaged over the batch and summed. Also IoU sums for the logs."""

    def __init__(self, start_warm: int = PROP_START_WARM, end_warm: int = PROP_END_WARM):
        self.bce = BootstrappedCE(start_warm, end_warm)

    def compute(self, data: Mapping[str, torch.Tensor], it: int) -> dict[str, torch.Tensor | float]:
        losses: dict[str, torch.Tensor | float] = defaultdict(float)
        selector = data.get("selector")
        b = data["logits_1"].shape[0]
        has_second = [False] * b if selector is None else (selector[:, 1] > 0.5).tolist()
        for i in (1, 2):
            logits, cls_gt = data[f"logits_{i}"], data["cls_gt"][:, i]
            for j in range(b):
                channels = logits[j:j + 1] if has_second[j] else logits[j:j + 1, :2]
                loss, p = self.bce(channels, cls_gt[j:j + 1], it)
                losses[f"loss_{i}"] = losses[f"loss_{i}"] + loss / b
                losses["p"] = losses["p"] + p / b / 2
            losses["total_loss"] = losses["total_loss"] + losses[f"loss_{i}"]
            inter, union = compute_tensor_iu(data[f"mask_{i}"][:, 0:1] > 0.5, data["gt"][:, i] > 0.5)
            losses["hide_iou/i"] = losses["hide_iou/i"] + inter
            losses["hide_iou/u"] = losses["hide_iou/u"] + union
            if selector is not None and data[f"mask_{i}"].shape[1] > 1:
                inter, union = compute_tensor_iu(data[f"mask_{i}"][:, 1:2] > 0.5, data["sec_gt"][:, i] > 0.5)
                losses["hide_iou/sec_i"] = losses["hide_iou/sec_i"] + inter
                losses["hide_iou/sec_u"] = losses["hide_iou/sec_u"] + union
        return dict(losses)
