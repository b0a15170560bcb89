"""ResNet-50 v1s backbone of f-BRS (Gluon "v1s": deep 3x3 stem, stride on the 3x3 conv, dilated).

State-dict layout (under ``feature_extractor.backbone.``): ``conv1.{0,1,3,4,6}`` (deep stem: three
3x3 convs 3->64->64->128 with BN+ReLU between), ``bn1``, ``layer1``..``layer4`` of torchvision-style
bottlenecks (``conv1/bn1/conv2/bn2/conv3/bn3/downsample.{0,1}``). layer3 and layer4 are dilated
(rates 2 and 4, the first block of each with the previous rate) so the output stride is 8.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck


class ResNetV1sBackbone(nn.Module):
    """Dilated ResNet-50 v1s without avgpool/fc. ``forward(x B×3×H×W) -> (c1, c2, c3, c4)``.

    c1: B×256×H/4×W/4, c2: B×512×H/8×W/8, c3: B×1024×H/8×W/8, c4: B×2048×H/8×W/8.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), stem_width: int = 64):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, 2 * stem_width, 3, stride=1, padding=1, bias=False),
        )
        self.inplanes = 2 * stem_width
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        # Gluon convention: the first block of a dilated stage uses half the stage's rate
        first_dilation = 1 if dilation in (1, 2) else dilation // 2
        mods = [Bottleneck(self.inplanes, planes, stride, downsample, dilation=first_dilation)]
        self.inplanes = out
        mods += [Bottleneck(out, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4
