"""The f-BRS click segmentation network as MiVOS loads it (``resnet50_dh128_lvis``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.batchnorm_fold import cached_inference_view, fold_batchnorm

from .deeplab import DeepLabV3Plus, SepConvHead
from .dist_maps import DistMaps


class FoldedFeatureExtractor(nn.Module):
    """Inference copy of ``DeepLabV3Plus.head_input`` with every BatchNorm folded into its conv.

    Channels-last memory layout; ~1.3x faster on CPU than the eval-mode original, equal up to
    float rounding (~1e-7 on the fixtures) but NOT bitwise: folding rescales the conv weights and the
    channels-last kernels sum in another order, and which order depends on the CPU's vector unit
    (AVX-512 vs AVX2). Those 1e-7 differences are enough to move f-BRS's L-BFGS path, so this copy is
    used only when the caller asks for the fast (non-exact) mode. Built from (and only valid for) the
    current weights.
    """

    def __init__(self, fe: DeepLabV3Plus):
        super().__init__()
        self.backbone = fold_batchnorm(fe.backbone)
        self.skip_project = fold_batchnorm(fe.skip_project)
        self.aspp = fold_batchnorm(fe.aspp)
        self.to(memory_format=torch.channels_last)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, _, _, c4 = self.backbone(x.contiguous(memory_format=torch.channels_last))
        c1 = self.skip_project(c1)
        aspp = F.interpolate(self.aspp(c4), c1.shape[2:], mode="bilinear", align_corners=True)
        return torch.cat((aspp, c1), dim=1).contiguous()


class DistMapsModel(nn.Module):
    """Image + click distance maps -> instance logits.

    ``forward(image B×3×H×W (ImageNet-normalised), points B×2N×2 (row, col), positives first,
    (-1, -1) padding) -> {'instances': B×1×H×W logits}``.
    The f-BRS predictor uses the split :meth:`head_input` / :meth:`logits_from_head_input`.
    ``forward`` and ``head_input`` compute exactly what the original computes (NCHW, BatchNorm
    separate) unless ``folded=True`` asks for the faster, not bitwise-equal, BN-folded copy.
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

    def _folded_features(self) -> FoldedFeatureExtractor:
        # cached on the feature extractor, rebuilt when any of its weights changes
        fe = self.feature_extractor
        return cached_inference_view(fe, lambda: FoldedFeatureExtractor(fe))

    def head_input(self, image: torch.Tensor, points: torch.Tensor, folded: bool = False) -> torch.Tensor:
        """B×(ch+32)×H/4×W/4 features entering the DeepLab head (f-BRS-B "after_aspp").

        ``folded=True`` (honoured in eval mode without autograd): the BN-folded channels-last copy
        does the heavy part, ~1.3x faster, equal to the original only up to float rounding.
        """
        coord_features = self.dist_maps(image, points)
        x = self.rgb_conv(torch.cat((image, coord_features), dim=1))
        if folded and not self.training and not torch.is_grad_enabled():
            return self._folded_features()(x)
        return self.feature_extractor.head_input(x)

    def logits_from_head_input(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """DeepLab head + instance head, bilinearly (align_corners=True) resized to ``size``."""
        out = self.head(self.feature_extractor.head(features))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=True)

    def forward(self, image: torch.Tensor, points: torch.Tensor, folded: bool = False) -> dict[str, torch.Tensor]:
        features = self.head_input(image, points, folded=folded)
        return {"instances": self.logits_from_head_input(features, tuple(image.shape[2:]))}


def build_fbrs_model() -> DistMapsModel:
    """The network of the f-BRS release ``resnet50_dh128_lvis.pth`` (413 state-dict entries, random init).

    ResNet-50 v1s backbone, DeepLab channels 128, ASPP dropout 0.2, click radius 260 — what the
    original loader builds from that file's keys.
    """
    return DistMapsModel(deeplab_ch=128, aspp_dropout=0.2, norm_radius=260.0)
