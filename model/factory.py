"""Build a network and load its checkpoint: the one entry point scripts, GUI and evaluator use.

Each ``load_*`` builds the network (never downloading anything), loads the file through
:func:`util.checkpoint.load_weights` (weights only, strict, one-line errors), moves it to
``device`` and puts it in ``eval()`` mode.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from util.checkpoint import load_weights


def _finish(net: nn.Module, device: torch.device | str) -> nn.Module:
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_propagation(path: str | os.PathLike, device: torch.device | str = "cpu", top_k: int | None = 50) -> nn.Module:
    from model.propagation.prop_net import PropagationNetwork
    return _finish(load_weights(PropagationNetwork(top_k=top_k), path, what="PropagationNetwork "
                                "(propagation_model.pth)"), device)


def load_fusion(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.fusion_net import FusionNet
    return _finish(load_weights(FusionNet(), path, what="FusionNet (fusion.pth)"), device)


def load_s2m(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    net = deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False)
    return _finish(load_weights(net, path, what="S2M DeepLabV3+ (s2m.pth)"), device)


def load_fbrs(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.fbrs import build_fbrs_model
    return _finish(load_weights(build_fbrs_model(), path, what="f-BRS ResNet-50 DeepLabV3+ (fbrs.pth = "
                                "resnet50_dh128_lvis.pth)"), device)
