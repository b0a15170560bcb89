"""Building blocks of the propagation network, shared by every network that loads its weights.

:class:`PropagationNetwork`, :class:`~model.attn_network.AttentionReadNetwork` and
:class:`~model.propagation.corr_network.CorrespondenceNetwork` all use the classes defined here, so
the state-dict keys (``mask_rgb_encoder.*``, ``rgb_encoder.*``, ``kv_m_f16.*``, ``kv_q_f16.*``,
``decoder.*``) are produced in one place. Nothing here downloads weights.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from model.batchnorm_fold import cached_inference_view, fold_batchnorm

KEY_DIM = 128
VALUE_DIM = 512


class BiasedBottleneck(nn.Module):
    """ResNet-50 v1.5 bottleneck (stride on the 3×3 conv) whose convolutions all carry a bias,
    as in the original's own ResNet copy used for the memory encoder."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)   # in place, as torchvision's
        return self.relu(out)


def _biased_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * BiasedBottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * BiasedBottleneck.expansion, kernel_size=1, stride=stride),
            nn.BatchNorm2d(planes * BiasedBottleneck.expansion))
    layers = [BiasedBottleneck(inplanes, planes, stride, downsample)]
    layers += [BiasedBottleneck(planes * BiasedBottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class MaskRGBEncoder(nn.Module):
    """Memory encoder: ResNet-50 up to layer3 (biased convs) over RGB + object mask + "others" mask.

    ``forward(frame B×3×H×W, mask B×1×H×W, others B×1×H×W) -> f16 B×1024×H/16×W/16``.
    ``extra_channels=1`` is the single-object variant of propagation training stage 0 (no "others"
    input; call with ``others=None``).
    """

    def __init__(self, extra_channels: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3 + extra_channels, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _biased_layer(64, 64, 3, stride=1)      # 1/4, 256
        self.layer2 = _biased_layer(256, 128, 4, stride=2)    # 1/8, 512
        self.layer3 = _biased_layer(512, 256, 6, stride=2)    # 1/16, 1024
        # the original's initialisation (only matters before weights are loaded)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)

    def forward(self, frame: torch.Tensor, mask: torch.Tensor, others: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([frame, mask] if others is None else [frame, mask, others], 1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class RGBEncoder(nn.Module):
    """Query encoder: torchvision ResNet-50 (no conv bias) up to layer3; layer1 is named ``res2``.

    ``forward(frame B×3×H×W) -> (f16 B×1024×H/16×W/16, f8 B×512×H/8×W/8, f4 B×256×H/4×W/4)``.
    """

    def __init__(self):
        super().__init__()
        resnet = tv_resnet.resnet50(weights=None)  # never downloads; weights come from the checkpoint
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.res2 = resnet.layer1     # 1/4, 256
        self.layer2 = resnet.layer2   # 1/8, 512
        self.layer3 = resnet.layer3   # 1/16, 1024

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(frame))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class KeyValue(nn.Module):
    """3×3 key and value projections: ``x B×C×h×w -> (key B×keydim×h×w, value B×valdim×h×w)``."""

    def __init__(self, indim: int = 1024, keydim: int = KEY_DIM, valdim: int = VALUE_DIM):
        super().__init__()
        self.key_proj = nn.Conv2d(indim, keydim, kernel_size=3, padding=1)
        self.val_proj = nn.Conv2d(indim, valdim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key_proj(x), self.val_proj(x)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        """Only the key projection (the value is not needed for attention / correspondence)."""
        return self.key_proj(x)


class ResBlock(nn.Module):
    """``x' + conv2(relu(conv1(relu(x))))`` where ``x'`` is ``x`` or a 3×3 conv of it when the width changes."""

    def __init__(self, indim: int, outdim: int | None = None):
        super().__init__()
        outdim = indim if outdim is None else outdim
        self.downsample = None if indim == outdim else nn.Conv2d(indim, outdim, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(indim, outdim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(outdim, outdim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x itself must stay intact (it is the residual); what the convolutions return is written in
        # place (same numbers: float addition commutes), which saves passes over fresh memory
        r = self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))
        if self.downsample is not None:
            x = self.downsample(x)
        return r.add_(x)


class UpsampleBlock(nn.Module):
    """Fuse a skip feature with a ×2 bilinearly upsampled coarser feature.

    ``forward(skip B×skip_c×2h×2w, up B×up_c×h×w) -> B×out_c×2h×2w``.
    """

    def __init__(self, skip_c: int, up_c: int, out_c: int, scale_factor: int = 2):
        super().__init__()
        self.skip_conv1 = nn.Conv2d(skip_c, up_c, kernel_size=3, padding=1)
        self.skip_conv2 = ResBlock(up_c, up_c)
        self.out_conv = ResBlock(up_c, out_c)
        self.scale_factor = scale_factor

    def skip(self, skip_f: torch.Tensor) -> torch.Tensor:
        """The skip branch alone: it depends only on the frame, so it can be computed once per frame
        (batch 1) and reused for every object and every round."""
        return self.skip_conv2(self.skip_conv1(skip_f))

    def merge(self, skip_x: torch.Tensor, up_f: torch.Tensor) -> torch.Tensor:
        """``skip_x`` (output of :meth:`skip`, batch 1 or B) + upsampled ``up_f`` (batch B) → ``out_conv``."""
        up = F.interpolate(up_f, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return self.out_conv(up.add_(skip_x))   # = skip_x + up (skip_x may be batch 1, up is batch B)

    def forward(self, skip_f: torch.Tensor, up_f: torch.Tensor) -> torch.Tensor:
        return self.merge(self.skip(skip_f), up_f)


class Decoder(nn.Module):
    """``forward(mem16 B×1024×h×w (readout ⊕ query value), f8, f4) -> logits B×1×16h×16w``."""

    def __init__(self):
        super().__init__()
        self.compress = ResBlock(1024, 512)
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, kernel_size=3, padding=1)

    def skips(self, f8: torch.Tensor, f4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Object-independent skip branches of a query frame: ``f8 1×512×2h×2w``, ``f4 1×256×4h×4w`` →
        (``s8 1×512×2h×2w``, ``s4 1×256×4h×4w``)."""
        return self.up_16_8.skip(f8), self.up_8_4.skip(f4)

    def decode_from_skips(self, f16: torch.Tensor, s8: torch.Tensor, s4: torch.Tensor) -> torch.Tensor:
        """The per-object part of the decoder given precomputed :meth:`skips` → logits ``B×1×16h×16w``."""
        return self._upsample(self.compress(f16), s8, s4)

    def query_value_part(self, v16: torch.Tensor) -> torch.Tensor:
        """What the query value contributes to ``compress``, computed once per frame: ``compress`` sees
        ``readout ⊕ v16`` (channels 0–511 and 512–1023), and its two convolutions on that input (``conv1``
        after a ReLU, ``downsample`` without) split exactly into a readout part and a v16 part.
        ``v16 1×512×h×w`` → ``1×1024×h×w``: the v16 parts of ``conv1`` and ``downsample``, biases included
        (see :meth:`decode_with_query_part`)."""
        c, n = self.compress, v16.shape[1]
        q1 = F.conv2d(F.relu(v16), c.conv1.weight[:, -n:], c.conv1.bias, padding=c.conv1.padding)
        qd = F.conv2d(v16, c.downsample.weight[:, -n:], c.downsample.bias, padding=c.downsample.padding)
        return torch.cat([q1, qd], 1)

    def decode_with_query_part(self, readout: torch.Tensor, q16: torch.Tensor, s8: torch.Tensor,
                               s4: torch.Tensor) -> torch.Tensor:
        """:meth:`decode_from_skips` of ``readout ⊕ v16`` from the readout ``B×512×h×w`` and
        :meth:`query_value_part` ``q16`` (batch 1, shared by the B objects) → logits ``B×1×16h×16w``.
        Same function; only the summation order of ``compress``'s input channels changes (float
        rounding), and each object's convolutions read 512 channels instead of 1024."""
        c, n = self.compress, readout.shape[1]
        half = q16.shape[1] // 2
        x = F.conv2d(F.relu(readout), c.conv1.weight[:, :n], padding=c.conv1.padding).add_(q16[:, :half])
        r = c.conv2(F.relu(x, inplace=True))
        x = r.add_(F.conv2d(readout, c.downsample.weight[:, :n], padding=c.downsample.padding).add_(q16[:, half:]))
        return self._upsample(x, s8, s4)

    def _upsample(self, x: torch.Tensor, s8: torch.Tensor, s4: torch.Tensor) -> torch.Tensor:
        """From ``compress``'s output ``B×512×h×w`` and the skips to logits ``B×1×16h×16w``."""
        x = self.up_16_8.merge(s8, x)
        x = self.up_8_4.merge(s4, x)
        # in place: x is up_8_4's fresh output and nothing else reads it (a new 53 MB tensor for two objects
        # at 480p took 40 ms to fill on two threads)
        x = self.pred(F.relu(x, inplace=True))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        return self.decode_from_skips(f16, *self.skips(f8, f4))


class PropagationEncoders(nn.Module):
    """The encoder half of the propagation network (first four sub-modules, in checkpoint order).

    Subclasses add a memory reader / decoder; a propagation checkpoint loads into any of them
    (with ``decoder.*`` ignored where there is no decoder).
    """

    def __init__(self):
        super().__init__()
        self.mask_rgb_encoder = MaskRGBEncoder()
        self.rgb_encoder = RGBEncoder()
        self.kv_m_f16 = KeyValue(1024, keydim=KEY_DIM, valdim=VALUE_DIM)
        self.kv_q_f16 = KeyValue(1024, keydim=KEY_DIM, valdim=VALUE_DIM)

    def with_folded_batchnorm(self) -> "PropagationEncoders":
        """An inference view of this (eval-mode) network whose two encoders are BatchNorm-folded copies
        (:func:`model.batchnorm_fold.fold_batchnorm`); every other sub-module is shared, not copied.

        Same outputs up to float rounding (~1e-6 relative), ~15 % less encoder time on CPU; ~70 MB more
        memory (the folded encoder weights). The view is cached on the network and rebuilt when any of
        its weights changes (a load, an optimiser step, a move to another device or memory format).
        """
        def build() -> "PropagationEncoders":
            view = copy.copy(self)
            view._modules = dict(self._modules)   # its own table: replacing the encoders leaves self alone
            view._modules["mask_rgb_encoder"] = fold_batchnorm(self.mask_rgb_encoder)
            view._modules["rgb_encoder"] = fold_batchnorm(self.rgb_encoder)
            return view
        return cached_inference_view(self, build)

    def encode_memory_key(self, frame: torch.Tensor, mask: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """``frame B×3×H×W``, ``mask``/``others`` ``B×1×H×W`` → memory key ``B×128×H/16×W/16``."""
        return self.kv_m_f16.key(self.mask_rgb_encoder(frame, mask, others))

    def encode_query_key(self, frame: torch.Tensor) -> torch.Tensor:
        """``frame B×3×H×W`` → query key ``B×128×H/16×W/16``."""
        f16, _, _ = self.rgb_encoder(frame)
        return self.kv_q_f16.key(f16)
