"""Helpers for the GUI tests: seeded-weight networks (no reference data needed), a generated clip,
a stand-in click controller, session arguments."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLIP_FRAMES, CLIP_W, CLIP_H = 6, 128, 112     # 8·7 = 56 ≥ 50 memory positions (top-k 50) per frame


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


def seeded_networks(folder: Path):
    """Load (once per test process) seeded-weight networks through the real loaders, from checkpoints
    written by :func:`tests.helpers_weights.write_seeded_checkpoints`. Seeded weights give well-defined
    but meaningless masks: GUI tests check flow, bookkeeping and files with them, not quality.
    Returns ``(gui.session.Networks, {name: checkpoint path})``."""
    if "nets" not in _NETWORKS:
        from gui.session import Networks
        from model.factory import load_fusion, load_propagation, load_s2m
        from tests.helpers_weights import write_seeded_checkpoints
        torch.set_num_threads(2)
        paths = write_seeded_checkpoints(folder)
        nets = Networks(load_propagation(paths["propagation_model"]), load_fusion(paths["fusion"]),
                        load_s2m(paths["s2m"]), None)
        _NETWORKS["nets"] = (nets, paths)
    return _NETWORKS["nets"]


def seeded_fbrs_controller(folder: Path):
    """A real FBRSController over the seeded f-BRS network loaded from a .pth file."""
    if "fbrs" not in _NETWORKS:
        from model.factory import load_fbrs
        from tests.helpers_weights import write_seeded_checkpoints
        _NETWORKS["fbrs"] = load_fbrs(write_seeded_checkpoints(folder, ("fbrs",))["fbrs"])
    from inference_core.interaction.fbrs_controller import FBRSController
    return FBRSController(_NETWORKS["fbrs"], "cpu")


class GatedFBRS(FakeFBRS):
    """A click controller that holds every click until the test opens the gate (``gate.set()``):
    a click that takes as long as the test wants, with no sleeping."""

    def __init__(self):
        super().__init__()
        import threading
        self.gate = threading.Event()
        self.entered = threading.Event()

    def interact(self, image, x, y, is_positive):
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return super().interact(image, x, y, is_positive)


def gate_propagation(monkeypatch, core, after_frames: int = 1):
    """Make ``core.interact_iter`` wait after ``after_frames`` frames until ``gate.set()`` (a
    propagation that takes as long as the test wants, with no sleeping).
    Returns ``(gate, reached)``: ``reached`` is set when the propagation waits at the gate."""
    import threading
    gate, reached = threading.Event(), threading.Event()
    real = core.interact_iter

    def gated(mask, idx):
        for done, total in real(mask, idx):
            yield done, total
            if done == after_frames:
                reached.set()
                if not gate.wait(60):
                    raise TimeoutError("the test never opened the gate")

    monkeypatch.setattr(core, "interact_iter", gated)
    return gate, reached
