"""The f-BRS click segmentation network as MiVOS loads it (``resnet50_dh128_lvis``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deeplab import DeepLabV3Plus, SepConvHead
from .dist_maps import DistMaps


class DistMapsModel(nn.Module):
    """Image + click distance maps -> instance logits.

    ``forward(image B×3×H×W (ImageNet-normalised), points B×2N×2 (row, col), positives first,
    (-1, -1) padding) -> {'instances': B×1×H×W logits}``.
    The f-BRS predictor uses the split :meth:`head_input` / :meth:`logits_from_head_input`.
    """

    def __init__(self, deeplab_ch: int = 128, aspp_dropout: float = 0.2, norm_radius: float = 260.0):
        super().__init__()
        self.rgb_conv = nn.Sequential(
            nn.Conv2d(5, 8, kernel_size=1),
            nn.LeakyReLU(negative_slope=0.2),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 3, kernel_size=1),
        )
        self.dist_maps = DistMaps(norm_radius=norm_radius, spatial_scale=1.0)
        self.feature_extractor = DeepLabV3Plus(ch=deeplab_ch, project_dropout=aspp_dropout)
        self.head = SepConvHead(1, in_channels=deeplab_ch, mid_channels=deeplab_ch // 2, num_layers=2)

    def head_input(self, image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """B×(ch+32)×H/4×W/4 features entering the DeepLab head (f-BRS-B "after_aspp")."""
        coord_features = self.dist_maps(image, points)
        x = self.rgb_conv(torch.cat((image, coord_features), dim=1))
        return self.feature_extractor.head_input(x)

    def logits_from_head_input(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """DeepLab head + instance head, bilinearly (align_corners=True) resized to ``size``."""
        out = self.head(self.feature_extractor.head(features))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=True)

    def forward(self, image: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.head_input(image, points)
        return {"instances": self.logits_from_head_input(features, tuple(image.shape[2:]))}


def build_fbrs_model() -> DistMapsModel:
    """The network of the f-BRS release ``resnet50_dh128_lvis.pth`` (413 state-dict entries, random init).

    ResNet-50 v1s backbone, DeepLab channels 128, ASPP dropout 0.2, click radius 260 — what the
    original loader builds from that file's keys.
    """
    return DistMapsModel(deeplab_ch=128, aspp_dropout=0.2, norm_radius=260.0)
