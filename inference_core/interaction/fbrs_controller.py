"""Click-to-mask controller (f-BRS-B) with MiVOS's configuration.

One object at a time: the first click after :meth:`FBRSController.unanchor` starts a fresh click
session on the given image; each click returns the binary mask ``prob > 0.5``; :meth:`undo`
restores the state before the last click.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from inference_core.fbrs import Click, Clicker, FeatureBRSPredictor, build_fbrs_b_predictor

# MiVOS's predictor configuration (interact/fbrs_controller.py of the original)
FBRS_PREDICTOR_PARAMS = {
    "prob_thresh": 0.5,
    "with_flip": True,
    "zoom_in_params": {"skip_clicks": 1, "target_size": 480, "expansion_ratio": 1.4},
    "predictor_params": {"net_clicks_limit": 8, "max_size": 800},
    "brs_opt_func_params": {"min_iou_diff": 1e-3},
    "lbfgs_params": {"maxfun": 20},
}


class FBRSController:
    """``FBRSController(net_or_path, device='cpu')``; ``interact(image, x, y, is_positive)``.

    net_or_path: a DistMapsModel (from ``model.factory.load_fbrs``) or the path of ``fbrs.pth``.
    precision: ``"float32"`` (default) is exact: the original's arithmetic, bitwise, on every CPU.
    A reduced precision (``"bfloat16"``, ``"float16"``, or ``"auto"`` where it resolves to one) selects
    the fast path: the BN-folded channels-last feature extractor, still float32 arithmetic but equal to
    the original only up to rounding (~1e-7), which can move the L-BFGS path and so the mask. The
    controller itself never enters autocast.
    """

    def __init__(self, net_or_path: nn.Module | str | os.PathLike, device: torch.device | str = "cpu",
                 prob_thresh: float = 0.5, precision: str = "float32"):
        from util.precision import resolve_precision
        self.precision = resolve_precision(precision, device)  # ValueError for an unknown name
        if isinstance(net_or_path, nn.Module):
            net = net_or_path.to(device).eval()
            for p in net.parameters():
                p.requires_grad_(False)
        else:
            from model.factory import load_fbrs
            net = load_fbrs(net_or_path, device)
        self.net = net
        self.device = device
        self.prob_thresh = prob_thresh
        self.clicker = Clicker()
        self.predictor: FeatureBRSPredictor | None = None
        self.states: list[dict] = []
        # (probability of earlier finished parts, probability of the current object), as the original
        self.probs_history: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.anchored = False

    def unanchor(self) -> None:
        """The next click starts a new session (new object, frame or interaction)."""
        self.anchored = False

    def _start_session(self, image: torch.Tensor) -> None:
        self.states = []
        self.probs_history = []
        self.clicker.reset_clicks()
        self.predictor = build_fbrs_b_predictor(self.net, self.device, **FBRS_PREDICTOR_PARAMS,
                                                folded_features=self.precision != "float32")
        self.predictor.set_input_image(image)

    @torch.no_grad()
    def interact(self, image: torch.Tensor, x: float, y: float, is_positive: bool) -> torch.Tensor:
        """Add a click at column ``x``, row ``y`` (pixels of ``image``).

        image: 1×3×H×W normalised (padded) frame; used only by the first click of a session.
        Returns the 1×1×H×W float mask (1 where the probability > 0.5).
        """
        image = image.to(self.device)
        if not self.anchored:
            self._start_session(image)
            self.anchored = True
        self.states.append({"clicker": self.clicker.get_state(), "predictor": self.predictor.get_states()})
        self.clicker.add_click(Click(is_positive=bool(is_positive), coords=(y, x)))
        pred = self.predictor.get_prediction(self.clicker)
        previous_total = self.probs_history[-1][0] if self.probs_history else torch.zeros_like(pred)
        self.probs_history.append((previous_total, pred))
        return (pred > self.prob_thresh).float()

    def undo(self) -> torch.Tensor | None:
        """Drop the last click; returns the mask before it, or None when no click is left."""
        if self.states:
            state = self.states.pop()
            self.clicker.set_state(state["clicker"])
            self.predictor.set_states(state["predictor"])
            self.probs_history.pop()
        if not self.probs_history:
            return None
        return (self.probs_history[-1][1] > self.prob_thresh).float()

    undo_click = undo

    @property
    def probs(self) -> torch.Tensor | None:
        """Probabilities 1×1×H×W after the last click (None before the first)."""
        return self.probs_history[-1][1] if self.probs_history else None

    @property
    def num_clicks(self) -> int:
        return len(self.clicker)
