"""Seeded test weights: every network in its official checkpoint layout, built from a bare clone.

Random (seeded) initialisation gives no segmentation quality, only well-defined numbers: use these
weights wherever a test checks behaviour (shapes, files, flow, bookkeeping), not accuracy. The batch-norm
running statistics are calibrated on a few random inputs so that the activations of the deep encoders
stay finite in eval mode.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

SEED = 0


def _calibrate_batchnorm(net: torch.nn.Module, make_input: Callable[[torch.Generator], tuple]) -> None:
    """Running mean/var of every BatchNorm from two random batches (cumulative average), then eval."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(SEED)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(*make_input(gen))
    for m in bns:
        m.momentum = 0.1
    net.eval()


def _propagation() -> torch.nn.Module:
    from model.propagation.prop_net import PropagationNetwork
    return PropagationNetwork(top_k=50)


def _fusion() -> torch.nn.Module:
    from model.fusion_net import FusionNet
    return FusionNet()


def _s2m() -> torch.nn.Module:
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    net = deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False)
    _calibrate_batchnorm(net, lambda g: (torch.randn(2, 6, 64, 64, generator=g),))
    return net


def _fbrs() -> torch.nn.Module:
    from model.fbrs.distmaps_model import build_fbrs_model
    net = build_fbrs_model()
    pts = torch.tensor([[[20.0, 20.0], [-1.0, -1.0]]] * 2)
    _calibrate_batchnorm(net, lambda g: (torch.randn(2, 3, 64, 64, generator=g), pts))
    return net


BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "propagation_model": _propagation,
    "fusion": _fusion,
    "s2m": _s2m,
    "fbrs": _fbrs,
}


def seeded_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The seeded state dict of network ``name`` (a key of :data:`BUILDERS`), official key names."""
    torch.manual_seed(SEED)
    return BUILDERS[name]().state_dict()


def write_seeded_checkpoints(folder: Path, names: tuple[str, ...] = ("propagation_model", "fusion", "s2m")
                             ) -> dict[str, Path]:
    """Save seeded weights of ``names`` as ``folder/<name>.pth`` (plain state dicts, as released)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        path = folder / f"{name}.pth"
        if not path.exists():
            torch.save(seeded_state_dict(name), path)
        paths[name] = path
    return paths


class SeededCheckpoints:
    """Seeded checkpoints in one folder, each written on first use: ``ckpts["s2m"]`` → ``folder/s2m.pth``.

    One instance per test session (the ``seeded_checkpoints`` fixture) so that the 54M-parameter
    propagation weights are built and saved once, and only when a test asks for them.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getitem__(self, name: str) -> Path:
        if name not in BUILDERS:
            raise KeyError(f"no seeded network {name!r}; known: {', '.join(BUILDERS)}")
        return write_seeded_checkpoints(self.folder, (name,))[name]
