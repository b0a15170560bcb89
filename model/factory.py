"""Build a network and load its checkpoint: the one entry point scripts, GUI and evaluator use.

Each ``load_*`` builds the network (never downloading anything), loads the file through
:func:`util.checkpoint.load_weights` (weights only, strict, one-line errors), moves it to
``device`` and puts it in ``eval()`` mode.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from util.checkpoint import load_weights


def _build_for_loading(cls: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    """Construct ``cls(*args, **kwargs)`` without initialising its weights (built on the meta device,
    then given uninitialised CPU storage): a strict :func:`load_weights` overwrites every parameter
    and buffer, so the random initialisation (seconds for a ResNet-50) would be wasted.
    ``num_batches_tracked`` counters, which a file may lack, are zeroed."""
    with torch.device("meta"):
        net = cls(*args, **kwargs)
    net = net.to_empty(device="cpu")
    # non-persistent buffers are not in a checkpoint and would stay uninitialised
    transient = {n for n, _ in net.named_buffers()} - set(net.state_dict())
    if transient:
        raise TypeError(f"{type(net).__name__} has non-persistent buffers {sorted(transient)}; build it normally")
    for name, buf in net.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    return net


def _finish(net: nn.Module, device: torch.device | str) -> nn.Module:
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_propagation(path: str | os.PathLike, device: torch.device | str = "cpu", top_k: int | None = 50) -> nn.Module:
    from model.propagation.prop_net import PropagationNetwork
    return _finish(load_weights(_build_for_loading(PropagationNetwork, top_k=top_k), path, what="PropagationNetwork "
                                "(propagation_model.pth)"), device)


def load_fusion(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.fusion_net import FusionNet
    return _finish(load_weights(_build_for_loading(FusionNet), path, what="FusionNet (fusion.pth)"), device)


def load_s2m(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    net = deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False)
    return _finish(load_weights(net, path, what="S2M DeepLabV3+ (s2m.pth)"), device)


def load_fbrs(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    from model.fbrs import build_fbrs_model
    return _finish(load_weights(build_fbrs_model(), path, what="f-BRS ResNet-50 DeepLabV3+ (fbrs.pth = "
                                "resnet50_dh128_lvis.pth)"), device)


def load_attention_reader(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The frozen encoders of fusion training, from ``propagation_model.pth`` (decoder keys ignored)."""
    from model.attn_network import AttentionReadNetwork
    return _finish(load_weights(_build_for_loading(AttentionReadNetwork), path, ignore_prefixes=("decoder.",),
                                what="AttentionReadNetwork (propagation_model.pth)"), device)


def load_correspondence(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The propagation encoders for ``try_correspondence.py``, from ``propagation_model.pth`` (decoder ignored)."""
    from model.propagation.corr_network import CorrespondenceNetwork
    return _finish(load_weights(_build_for_loading(CorrespondenceNetwork), path, ignore_prefixes=("decoder.",),
                                what="CorrespondenceNetwork (propagation_model.pth)"), device)


# ImageNet ResNet-50 the original's training starts its encoders from (torchvision's v1 weights); only the
# trainers use it, and it is fetched by ``download_model.py --pretrained``, never by a network constructor.
IMAGENET_RESNET50_URL = "https://download.pytorch.org/models/resnet50-19c8e357.pth"
from util.hyper_para import IMAGENET_RESNET50_FILE  # noqa: E402  (one spelling of the file name)


def load_imagenet_resnet50(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ImageNet ResNet-50 state dict at ``path``, checked strictly against torchvision's ResNet-50
    (weights only; one-line :class:`util.checkpoint.CheckpointError` naming missing/unexpected keys)."""
    from torchvision.models import resnet50
    net = load_weights(_build_for_loading(resnet50, weights=None), path,
                       what=f"torchvision ResNet-50 (ImageNet, {IMAGENET_RESNET50_FILE})")
    return {k: v for k, v in net.state_dict().items()}
