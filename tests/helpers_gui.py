"""Helpers for the GUI tests: formula-weight checkpoints, a generated clip, a controller factory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLIP_FRAMES, CLIP_W, CLIP_H = 6, 128, 112     # 8·7 = 56 ≥ 50 memory positions (top-k 50) per frame


def write_formula_checkpoints(formula, folder: Path) -> dict[str, Path]:
    """Formula weights of the propagation, fusion and S2M networks as official-layout .pth files."""
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork
    from model.s2m.s2m_network import deeplabv3plus_resnet50

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in (("propagation_model", lambda: PropagationNetwork(top_k=50)),
                        ("fusion", FusionNet),
                        ("s2m", lambda: deeplabv3plus_resnet50(num_classes=1, output_stride=16,
                                                               pretrained_backbone=False))):
        path = folder / f"{name}.pth"
        if not path.exists():
            torch.save(formula.formula_state_dict(build().state_dict()), path)
        paths[name] = path
    return paths


def make_test_clip(num_frames: int = CLIP_FRAMES, width: int = CLIP_W, height: int = CLIP_H, seed: int = 3):
    from dataset.synthetic import make_clip
    return make_clip(num_frames=num_frames, width=width, height=height, num_objects=2, seed=seed)


def label_centroid(labels: np.ndarray, k: int) -> tuple[float, float]:
    ys, xs = np.nonzero(labels == k)
    return float(xs.mean()), float(ys.mean())


class FakeFBRS:
    """Stands in for the f-BRS controller where a test is about the GUI flow, not f-BRS: a positive
    click adds a disc of radius 8 around the click (padded coordinates), a negative one removes it."""

    def __init__(self):
        self.history: list[torch.Tensor] = []
        self.anchored = False
        self.clicks = []

    def unanchor(self):
        self.anchored = False

    def interact(self, image, x, y, is_positive):
        if not self.anchored:
            self.history = []
            self.anchored = True
        self.clicks.append((x, y, is_positive))
        h, w = image.shape[-2:]
        m = self.history[-1].clone() if self.history else torch.zeros(1, 1, h, w)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        m[0, 0][(yy - y) ** 2 + (xx - x) ** 2 <= 64] = float(is_positive)
        self.history.append(m)
        return m.to(image.device)

    def undo_click(self):
        if self.history:
            self.history.pop()
        return self.history[-1].clone() if self.history else None


def session_args(**overrides):
    """Parsed command-line arguments of the GUI with test defaults (CPU, no f-BRS file needed)."""
    from gui.session import build_parser
    args = build_parser().parse_args([])
    args.device = "cpu"
    args.fbrs_model = ""
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def image_to_label(x: float, y: float, label_w: int, label_h: int, img_w: int, img_h: int) -> tuple[int, int]:
    """Inverse of ``gui.controller.view_to_image``: where image pixel (x, y) lies on the canvas label."""
    ratio = min(label_h / img_h, label_w / img_w)
    return int(round(x * ratio + (label_w - img_w * ratio) / 2)), int(round(y * ratio + (label_h - img_h * ratio) / 2))


_NETWORKS: dict = {}


def formula_networks(formula, folder: Path):
    """Load (once per test process) the formula-weight networks through the real loaders.
    Returns ``(gui.session.Networks, {name: checkpoint path})``."""
    if "nets" not in _NETWORKS:
        from gui.session import Networks
        from model.factory import load_fusion, load_propagation, load_s2m
        torch.set_num_threads(2)
        paths = write_formula_checkpoints(formula, folder)
        nets = Networks(load_propagation(paths["propagation_model"]), load_fusion(paths["fusion"]),
                        load_s2m(paths["s2m"]), None)
        _NETWORKS["nets"] = (nets, paths)
    return _NETWORKS["nets"]
