"""f-BRS-B predictor: transforms, cached head features, L-BFGS over feature scale/bias.

Mirrors the original ``FeatureBRSPredictor`` with insertion mode ``after_aspp`` (the mode MiVOS
uses): the 160-channel input of the DeepLab head is computed once per click (while the click count
is within ``net_clicks_limit`` or the network input changed) and every L-BFGS evaluation only runs
the two small heads on ``features·(1+scale) + bias``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import fmin_l_bfgs_b
from torch import nn

from .brs import ScaleBiasOptimizer
from .clicker import Click, Clicker
from .transforms import AddHorizontalFlip, BaseTransform, LimitLongestSide, SigmoidForPred, ZoomIn

LBFGS_DEFAULTS = {"m": 20, "factr": 0, "pgtol": 1e-8, "maxfun": 20}


class FeatureBRSPredictor:
    """``get_prediction(clicker) -> 1×1×H×W`` probabilities for the image given to :meth:`set_input_image`."""

    def __init__(self, net: nn.Module, device: torch.device | str, opt_functor: ScaleBiasOptimizer,
                 with_flip: bool = True, zoom_in: ZoomIn | None = None, max_size: int | None = None,
                 net_clicks_limit: int | None = 8, optimize_after_n_clicks: int = 1,
                 folded_features: bool = False):
        self.net = net
        # the BN-folded channels-last head input: faster, but not bitwise the original's (see DistMapsModel)
        self.folded_features = folded_features
        self.device = device
        self.opt_functor = opt_functor
        self.with_flip = with_flip
        self.zoom_in = zoom_in
        self.net_clicks_limit = net_clicks_limit
        self.optimize_after_n_clicks = optimize_after_n_clicks
        self.num_channels = net.feature_extractor.ch + 32  # "after_aspp": ASPP ⊕ skip features

        self.transforms: list[BaseTransform] = [zoom_in] if zoom_in is not None else []
        if max_size is not None:
            self.transforms.append(LimitLongestSide(max_size=max_size))
        self.transforms.append(SigmoidForPred())
        if with_flip:
            self.transforms.append(AddHorizontalFlip())

        self.original_image: torch.Tensor | None = None
        self.opt_data: np.ndarray | None = None
        self.input_data: torch.Tensor | None = None
        self.last_points_nd: torch.Tensor | None = None  # what the network last received (inspection)
        self.last_lbfgs: dict | None = None

    # ------------------------------------------------------------------ session
    def set_input_image(self, image_nd: torch.Tensor) -> None:
        """``image_nd``: 1×3×H×W (or 3×H×W) normalised image; resets all per-session state."""
        for t in self.transforms:
            t.reset()
        self.original_image = image_nd.to(self.device)
        if self.original_image.dim() == 3:
            self.original_image = self.original_image.unsqueeze(0)
        self.opt_data = None
        self.input_data = None

    def get_states(self) -> dict[str, Any]:
        return {"transform_states": [t.get_state() for t in self.transforms], "opt_data": self.opt_data}

    def set_states(self, states: dict[str, Any]) -> None:
        assert len(states["transform_states"]) == len(self.transforms)
        for state, t in zip(states["transform_states"], self.transforms):
            t.set_state(state)
        self.opt_data = states["opt_data"]

    # ------------------------------------------------------------------ prediction
    def get_prediction(self, clicker: Clicker) -> torch.Tensor:
        """Probabilities 1×1×H×W for the clicks so far."""
        image_nd, clicks_lists, is_image_changed = self.apply_transforms(self.original_image,
                                                                         [clicker.get_clicks()])
        prediction = self._get_prediction(image_nd, clicks_lists, is_image_changed)
        if prediction.shape[2:] != image_nd.shape[2:]:
            prediction = F.interpolate(prediction, size=image_nd.shape[2:], mode="bilinear", align_corners=True)
        for t in reversed(self.transforms):
            prediction = t.inv_transform(prediction)
        if self.zoom_in is not None and self.zoom_in.check_possible_recalculation():
            return self.get_prediction(clicker)
        return prediction

    def apply_transforms(self, image_nd: torch.Tensor, clicks_lists: list[list[Click]]):
        is_image_changed = False
        for t in self.transforms:
            image_nd, clicks_lists = t.transform(image_nd, clicks_lists)
            is_image_changed |= t.image_changed
        return image_nd, clicks_lists, is_image_changed

    def get_points_nd(self, clicks_lists: list[list[Click]]) -> torch.Tensor:
        """B×2N×2 (row, col) float32: positives then negatives, each padded with (-1, -1) to N."""
        num_pos = [sum(c.is_positive for c in clicks) for clicks in clicks_lists]
        num_neg = [len(clicks) - p for clicks, p in zip(clicks_lists, num_pos)]
        num_max = max(num_pos + num_neg)
        if self.net_clicks_limit is not None:
            num_max = min(self.net_clicks_limit, num_max)
        num_max = max(1, num_max)
        total = []
        for clicks in clicks_lists:
            clicks = clicks[:self.net_clicks_limit]
            pos = [c.coords for c in clicks if c.is_positive]
            neg = [c.coords for c in clicks if not c.is_positive]
            total.append(pos + (num_max - len(pos)) * [(-1, -1)] + neg + (num_max - len(neg)) * [(-1, -1)])
        # float64 coordinates cast to float32: the original's distance maps round the float32 value
        return torch.tensor(total, dtype=torch.float64).to(torch.float32).to(self.device)

    def _get_clicks_maps_nd(self, clicks_lists: list[list[Click]], image_shape: tuple[int, int],
                            radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """B×1×H×W maps of the (2·radius+1)² squares around the clicks (loss support)."""
        pos = np.zeros((len(clicks_lists), 1) + tuple(image_shape), dtype=np.float32)
        neg = np.zeros_like(pos)
        for i, clicks in enumerate(clicks_lists):
            for click in clicks:
                y, x = int(round(click.coords[0])), int(round(click.coords[1]))
                # plain numpy slicing, negative starts included, exactly as the original
                target = pos if click.is_positive else neg
                target[i, 0, y - radius:y + radius + 1, x - radius:x + radius + 1] = True
        return torch.from_numpy(pos).to(self.device), torch.from_numpy(neg).to(self.device)

    def _get_prediction(self, image_nd: torch.Tensor, clicks_lists: list[list[Click]],
                        is_image_changed: bool) -> torch.Tensor:
        points_nd = self.get_points_nd(clicks_lists)
        self.last_points_nd = points_nd
        pos_mask, neg_mask = self._get_clicks_maps_nd(clicks_lists, image_nd.shape[2:])
        num_clicks = len(clicks_lists[0])
        bs = image_nd.shape[0] // 2 if self.with_flip else image_nd.shape[0]
        out_size = tuple(image_nd.shape[2:])

        if self.opt_data is None or self.opt_data.shape[0] // (2 * self.num_channels) != bs:
            self.opt_data = np.zeros(bs * 2 * self.num_channels, dtype=np.float32)

        if (self.net_clicks_limit is None or num_clicks <= self.net_clicks_limit or is_image_changed
                or self.input_data is None):
            with torch.no_grad():
                if self.folded_features:
                    self.input_data = self.net.head_input(image_nd, points_nd, folded=True)
                else:
                    self.input_data = self.net.head_input(image_nd, points_nd)
        input_data = self.input_data
        n_rep = 2 if self.with_flip else 1

        def get_prediction_logits(scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            scale = scale.view(bs, -1, 1, 1).repeat(n_rep, 1, 1, 1)
            bias = bias.view(bs, -1, 1, 1).repeat(n_rep, 1, 1, 1)
            return self.net.logits_from_head_input(input_data * scale + bias, out_size)

        functor = self.opt_functor
        functor.init_click(get_prediction_logits, pos_mask, neg_mask, self.device)
        self.last_lbfgs = None
        if num_clicks > self.optimize_after_n_clicks:
            x, f, info = fmin_l_bfgs_b(func=functor, x0=self.opt_data, **functor.optimizer_params)
            self.opt_data = x
            self.last_lbfgs = {"f": float(f), "funcalls": info["funcalls"], "nit": info["nit"],
                               "warnflag": info["warnflag"], "evaluations": functor.num_evaluations}

        with torch.no_grad():
            if functor.best_prediction is not None:
                return functor.best_prediction
            if not self.opt_data.any():
                # scale 1, bias 0: the features unchanged (x·1 + 0 is exact), skip the no-op
                return self.net.logits_from_head_input(input_data, out_size)
            (scale, bias), _ = functor.unpack_opt_params(torch.from_numpy(self.opt_data).to(self.device))
            return get_prediction_logits(scale.float(), bias.float())


def build_fbrs_b_predictor(net: nn.Module, device: torch.device | str = "cpu", prob_thresh: float = 0.5,
                           with_flip: bool = True, zoom_in_params: dict | None = None,
                           predictor_params: dict | None = None, brs_opt_func_params: dict | None = None,
                           lbfgs_params: dict | None = None, folded_features: bool = False) -> FeatureBRSPredictor:
    """The original ``get_predictor(net, 'f-BRS-B', ...)``: ``maxiter = 2·maxfun``, clicks limit 8.

    ``folded_features=True`` selects the faster BN-folded head input (not bitwise the original's).
    """
    lbfgs = dict(LBFGS_DEFAULTS)
    lbfgs.update(lbfgs_params or {})
    lbfgs["maxiter"] = 2 * lbfgs["maxfun"]
    params = {"optimize_after_n_clicks": 1, "net_clicks_limit": 8}
    params.update(predictor_params or {})
    zoom_in = ZoomIn(**zoom_in_params) if zoom_in_params is not None else None
    functor = ScaleBiasOptimizer(optimizer_params=lbfgs, prob_thresh=prob_thresh, **(brs_opt_func_params or {}))
    return FeatureBRSPredictor(net, device, functor, with_flip=with_flip, zoom_in=zoom_in,
                               folded_features=folded_features, **params)
