"""The fusion training forward pass (pure torch): frozen attention reader + trainable FusionNet."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from model.aggregate import aggregate_wbg_channel


def fusion_forward(fusion: nn.Module, attention_reader: nn.Module,
                   data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch of :class:`dataset.fusion_dataset.FusionDataset` samples → outputs.

    ``fusion``: FusionNet (possibly DDP-wrapped); ``attention_reader``: frozen AttentionReadNetwork.
    Returns ``logits`` and ``mask`` (B×3×H×W: background, object 1, object 2; object 2 zeroed where
    ``selector`` says it is absent, before aggregation) and ``attn1``/``attn2`` (B×2×H×W).

    Both objects go through FusionNet in **one** call (batch 2B): the network is per-sample (no
    batch-norm), so this equals two calls, and DDP sees exactly one forward per backward.
    """
    with torch.no_grad():
        attn1, attn2 = attention_reader(data["src2_ref_im"], data["src2_ref"], data["src2_ref_gt"],
                                        data["src2_ref2"], data["src2_ref_gt2"], data["rgb"])
    im, dist = data["rgb"], data["dist"]
    b = im.shape[0]
    logits2 = fusion(torch.cat([im, im]), torch.cat([data["seg1"], data["seg12"]]),
                     torch.cat([data["seg2"], data["seg22"]]), torch.cat([attn1, attn2]), torch.cat([dist, dist]))
    prob2 = torch.sigmoid(logits2)
    prob = torch.cat([prob2[:b], prob2[b:]], 1) * data["selector"][:, :, None, None]
    logits, prob = aggregate_wbg_channel(prob, keep_bg=True)
    return {"logits": logits, "mask": prob, "attn1": attn1, "attn2": attn2}
