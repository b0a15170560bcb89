"""Start S2M training from a DeepLabV3+ ResNet-50 segmentation checkpoint (VainF's DeepLabV3Plus-Pytorch, as the
original S2M training does): the RGB stem gains three input channels (previous mask, positive and negative scribbles) and the
classifier becomes a single-logit head. Pure tensor surgery; reading the file is the caller's job."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

STEM_KEY = "backbone.conv1.weight"


def deeplab_to_s2m_state(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Adapt ``source`` (a DeepLabV3+ state dict) to the shapes of ``target`` (the S2M network's state dict).

    For each key whose shape differs: a bias becomes zeros of 1 element (the new 1-class head); a weight
    whose input dimension is not 3 (the final 1×1 classifier) becomes one orthogonally initialised output
    channel; the 3-channel stem ``backbone.conv1.weight`` (64×3×7×7) is concatenated with an orthogonally
    initialised 64×3×7×7 block. Everything else is copied. Keys are not checked here (load strictly after).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        own = target.get(key)
        if not isinstance(value, torch.Tensor) or own is None or value.shape == own.shape:
            out[key] = value
            continue
        if "bias" in key:
            out[key] = torch.zeros_like(value[0:1])
        elif value.dim() < 2 or value.shape[1] != 3:
            fresh = torch.zeros_like(value[0:1])
            nn.init.orthogonal_(fresh, generator=generator)
            out[key] = fresh
        else:
            extra = torch.zeros(value.shape[0], own.shape[1] - value.shape[1], *value.shape[2:], dtype=value.dtype)
            nn.init.orthogonal_(extra, generator=generator)
            out[key] = torch.cat([value, extra], 1)
    return out
