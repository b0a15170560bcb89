"""The S2M network: DeepLabV3+ (VainF layout) over a torchvision ResNet-50 with a 6-channel stem.

Input ``B×6×H×W`` = normalised RGB (3) + previous hard mask of the object (1) + positive scribbles
(1) + negative scribbles (1), H and W multiples of 16. Output ``B×1×H×W`` raw logits.

State-dict keys are those of the official ``s2m.pth`` (368 entries): ``backbone.*`` is a
torchvision ResNet-50 cut after layer4 by ``IntermediateLayerGetter`` (no ``avgpool``/``fc``),
``classifier.*`` the DeepLabV3+ head whose ``aspp`` is torchvision's ``ASPP`` (same module layout
and key names as VainF's DeepLabV3Plus-Pytorch, which the original copied).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from model.batchnorm_fold import cached_inference_view, fold_batchnorm

S2M_IN_CHANNELS = 6


class DeepLabHeadV3Plus(nn.Module):
    """DeepLabV3+ decoder: ASPP on the stride-16 features, upsampled to the stride-4 features
    (projected to 48 channels), concatenated, 3×3 conv + BN + ReLU, 1×1 to ``num_classes``."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int,
                 aspp_rates: Sequence[int]) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
        )
        self.aspp = ASPP(in_channels, list(aspp_rates), out_channels=256)
        # torchvision uses dropout 0.5 after the ASPP projection, the original 0.1 (training only)
        self.aspp.project[3].p = 0.1
        self.classifier = nn.Sequential(
            nn.Conv2d(48 + 256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> torch.Tensor:
        """``features['low_level']`` B×256×H/4×W/4, ``features['out']`` B×2048×H/16×W/16 →
        logits B×num_classes×H/4×W/4."""
        low_level = self.project(features["low_level"])
        context = self.aspp(features["out"])
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low_level, context], dim=1))


class DeepLabV3Plus(nn.Module):
    """Backbone + DeepLabV3+ head; logits are upsampled bilinearly to the input size."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def with_folded_batchnorm(self) -> nn.Module:
        """An inference copy (eval mode) with every BatchNorm folded into its convolution
        (:func:`model.batchnorm_fold.fold_batchnorm`): same logits up to float rounding, ~10 % less
        time on CPU. Cached, and rebuilt when the weights change."""
        return cached_inference_view(self, lambda: fold_batchnorm(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` B×6×H×W → logits B×num_classes×H×W (contiguous)."""
        # channels_last (NHWC) convolutions: ~25 % less CPU time on 2 cores, tensor-core friendly on CUDA
        features = self.backbone(x.contiguous(memory_format=torch.channels_last))
        logits = self.classifier(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False).contiguous()


def deeplabv3plus_resnet50(num_classes: int = 1, output_stride: int = 16,
                           pretrained_backbone: bool = False) -> DeepLabV3Plus:
    """Build the S2M network exactly as MiVOS does (``S2M = deeplabv3plus_resnet50``).

    ``output_stride`` 16 dilates layer4 (ASPP rates 6/12/18); 8 dilates layer3 and layer4 (rates
    12/24/36). ``pretrained_backbone`` must be False: models never download weights here (the
    official ``s2m.pth`` overwrites every backbone weight anyway).
    """
    if pretrained_backbone:
        raise ValueError("deeplabv3plus_resnet50: pretrained_backbone=True is not supported (models never "
                         "download weights); load s2m.pth through model.factory.load_s2m instead")
    if output_stride == 16:
        dilation, rates = [False, False, True], (6, 12, 18)
    elif output_stride == 8:
        dilation, rates = [False, True, True], (12, 24, 36)
    else:
        raise ValueError(f"deeplabv3plus_resnet50: output_stride must be 8 or 16, got {output_stride}")
    resnet = resnet50(weights=None, replace_stride_with_dilation=dilation)
    # the stem takes image + previous mask + positive + negative scribbles
    resnet.conv1 = nn.Conv2d(S2M_IN_CHANNELS, 64, kernel_size=7, stride=2, padding=3, bias=False)
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer1": "low_level", "layer4": "out"})
    head = DeepLabHeadV3Plus(in_channels=2048, low_level_channels=256, num_classes=num_classes, aspp_rates=rates)
    # weights stored NHWC too (load_state_dict copies into them and .to(device) keeps the layout),
    # so no per-call weight reordering; keys, shapes and dtypes are unchanged
    return DeepLabV3Plus(backbone, head).to(memory_format=torch.channels_last)
