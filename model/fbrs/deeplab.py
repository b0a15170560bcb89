"""DeepLabV3+ feature extractor and separable-conv heads of f-BRS (128-channel variant).

Module names follow the release checkpoint (``feature_extractor.{backbone,head.block,skip_project.
skip_project,aspp.concurent,aspp.project}``, ``head.layers``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNetV1sBackbone


class SeparableConv2d(nn.Module):
    """Depthwise k×k conv, pointwise 1×1 conv, BN, ReLU (no conv biases); weights under ``body``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, bias=False, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SepConvHead(nn.Module):
    """``num_layers`` separable convs then a 1×1 conv to ``num_outputs`` (weights under ``layers``)."""

    def __init__(self, num_outputs: int, in_channels: int, mid_channels: int, num_layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [SeparableConv2d(in_channels if i == 0 else mid_channels, mid_channels)
                                 for i in range(num_layers)]
        mods.append(nn.Conv2d(mid_channels, num_outputs, 1))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DeepLabHead(nn.Module):
    """Two separable convs and a 1×1 conv on the (ASPP ⊕ skip) features (weights under ``block``)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            SeparableConv2d(in_channels, mid_channels),
            SeparableConv2d(mid_channels, mid_channels),
            nn.Conv2d(mid_channels, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SkipProject(nn.Module):
    """1×1 conv + BN + ReLU on layer1 features (weights under ``skip_project``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.skip_project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_project(x)


class ASPPPooling(nn.Module):
    """Image pooling branch: global average, 1×1 conv, BN, ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.gap(x)
        # bilinear (align_corners=True) resizing of a 1×1 map is a plain broadcast
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


def _aspp_conv(in_channels: int, out_channels: int, rate: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPP(nn.Module):
    """1×1 branch, three atrous 3×3 branches, image pooling; concat, 1×1 projection, BN, ReLU, dropout."""

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, int, int] = (12, 24, 36),
                 project_dropout: float = 0.2):
        super().__init__()
        self.concurent = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                          nn.ReLU()),
            *[_aspp_conv(in_channels, out_channels, r) for r in rates],
            ASPPPooling(in_channels, out_channels),
        ])
        project: list[nn.Module] = [nn.Conv2d(5 * out_channels, out_channels, 1, bias=False),
                                    nn.BatchNorm2d(out_channels), nn.ReLU()]
        if project_dropout > 0:
            project.append(nn.Dropout(project_dropout))
        self.project = nn.Sequential(*project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.concurent], dim=1))


class DeepLabV3Plus(nn.Module):
    """ResNet-50 v1s + ASPP (rates 12/24/36) + layer1 skip (32 ch) + separable head, ``ch`` channels.

    ``head_input(x)`` gives the ``ch + 32`` channel features that f-BRS-B rescales ("after_aspp");
    ``forward(x B×3×H×W) -> B×ch×H/4×W/4``.
    """

    def __init__(self, ch: int = 128, project_dropout: float = 0.2):
        super().__init__()
        self.ch = ch
        self.aspp_in_channels = 2048
        self.backbone = ResNetV1sBackbone()
        self.head = DeepLabHead(ch + 32, ch, ch)
        self.skip_project = SkipProject(256, 32)
        self.aspp = ASPP(self.aspp_in_channels, ch, project_dropout=project_dropout)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` B×3×H×W -> B×(ch+32)×H/4×W/4: upsampled ASPP output concatenated with the skip."""
        c1, _, _, c4 = self.backbone(x)
        c1 = self.skip_project(c1)
        aspp = self.aspp(c4)
        aspp = F.interpolate(aspp, c1.shape[2:], mode="bilinear", align_corners=True)
        return torch.cat((aspp, c1), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_input(x))
