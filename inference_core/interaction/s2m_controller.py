"""Scribble-to-Mask inference: the GUI's S2M controller and the DAVIS evaluator's scribble → mask step.

Both build, for every object k = 1…K, a 6-channel S2M input
``[image (3), prev_mask == k (1), positive scribbles (1), negative scribbles (1)]`` with
positive = ``scribbles == k`` and negative = ``scribbles != k`` and not "no scribble", and return
``sigmoid(S2M(input))`` per object. They differ only in the "no scribble" value (255 in the GUI's
canvas, −1 in davisinteractive's rasterised map) and in dilation (the DAVIS evaluation dilates both
scribble maps with a 3×3 ones kernel; the GUI does not). The original ran the network once per
object; here all objects go through one batched call (BatchNorm is in eval mode, so the batch
items do not interact and only float summation order can differ).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.aggregate import aggregate_wbg
from model.batchnorm_fold import inference_network
from util.precision import autocast_dtype, precision_name
from util.tensor_util import pad_divide_by

GUI_NO_SCRIBBLE = 255
DAVIS_NO_SCRIBBLE = -1


def _as_long_map(x: np.ndarray | torch.Tensor, name: str, device: torch.device | str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))  # copy: canvases may be read-only
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name}: expected an integer label map, got {t.dtype}")
    return t.to(device=device, dtype=torch.long)


def build_s2m_input(image: torch.Tensor, prev_mask: np.ndarray | torch.Tensor,
                    scribbles: np.ndarray | torch.Tensor, num_objects: int, no_scribble: int,
                    dilate: bool = False) -> torch.Tensor:
    """Network input of every object, ``K×6×H'×W'`` float32 (row k−1 is object k).

    ``image``: ``1×3×H'×W'`` normalised, padded to /16. ``prev_mask``: hard label map ``1×H'×W'``
    or ``H'×W'`` (padded). ``scribbles``: integer map ``H×W`` (0 = background stroke, k = object k,
    ``no_scribble`` = nothing); zero-padded to /16 like the image, so it may be the true or the
    padded size. ``dilate``: grow both scribble maps by a 3×3 ones kernel before padding (DAVIS).
    """
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image: expected a normalised 1×3×H'×W' tensor, got {tuple(image.shape)}")
    device = image.device
    nh, nw = image.shape[-2:]
    prev = _as_long_map(prev_mask, "prev_mask", device)
    if prev.dim() == 3 and prev.shape[0] == 1:
        prev = prev[0]
    if tuple(prev.shape) != (nh, nw):
        raise ValueError(f"prev_mask: expected the padded size {nh}×{nw} of the image, got {tuple(prev.shape)}")
    scr = _as_long_map(scribbles, "scribbles", device)
    if scr.dim() != 2:
        raise ValueError(f"scribbles: expected an H×W label map, got {tuple(scr.shape)}")

    obj_ids = torch.arange(1, num_objects + 1, device=device).view(-1, 1, 1)  # K×1×1
    positive = scr.unsqueeze(0) == obj_ids                                    # K×H×W
    negative = (scr.unsqueeze(0) != obj_ids) & (scr != no_scribble).unsqueeze(0)
    scribble_maps = torch.stack([positive, negative], 1).float()               # K×2×H×W
    if dilate:
        # max over a 3×3 window of a 0/1 map = binary dilation with a 3×3 ones kernel; the
        # -inf padding of max_pool2d matches cv2.dilate's default border (outside never sets a pixel)
        scribble_maps = F.max_pool2d(scribble_maps, kernel_size=3, stride=1, padding=1)
    scribble_maps, _ = pad_divide_by(scribble_maps, 16)
    if tuple(scribble_maps.shape[-2:]) != (nh, nw):
        raise ValueError(f"scribbles: size {tuple(scr.shape)} pads to {tuple(scribble_maps.shape[-2:])}, "
                         f"not to the image's padded size {nh}×{nw}; pass the scribbles at the frame's true size")
    prev_k = (prev.unsqueeze(0) == obj_ids).float().unsqueeze(1)               # K×1×H'×W'
    return torch.cat([image.float().expand(num_objects, -1, -1, -1), prev_k, scribble_maps], 1)


@torch.no_grad()
def run_s2m(s2m_net: nn.Module, net_input: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """``net_input`` ``K×6×H'×W'`` → per-object probabilities ``K×1×H'×W'`` (sigmoid of the logits).

    All objects in one network call unless ``batch_size`` caps the batch (to bound GPU memory).
    """
    s2m_net = inference_network(s2m_net)   # BatchNorm folded (cached on the network), in eval mode
    if batch_size is None or batch_size >= net_input.shape[0]:
        return torch.sigmoid(s2m_net(net_input))
    return torch.cat([torch.sigmoid(s2m_net(chunk)) for chunk in net_input.split(batch_size)], 0)


def scribbles_to_probabilities(s2m_net: nn.Module, image: torch.Tensor, prev_mask: np.ndarray | torch.Tensor,
                               scribbles: np.ndarray | torch.Tensor, num_objects: int, no_scribble: int,
                               dilate: bool = False, batch_size: int | None = None) -> torch.Tensor:
    """S2M for all objects: ``K×1×H'×W'`` probabilities (see :func:`build_s2m_input` for the inputs)."""
    if num_objects < 1:
        raise ValueError(f"num_objects must be at least 1, got {num_objects}")
    return run_s2m(s2m_net, build_s2m_input(image, prev_mask, scribbles, num_objects, no_scribble, dilate),
                   batch_size)


class S2MController:
    """The GUI's scribble controller: image + previous hard mask + scribble canvas → object probabilities."""

    def __init__(self, s2m_net: nn.Module, num_objects: int, ignore_class: int = GUI_NO_SCRIBBLE,
                 device: torch.device | str = "cpu", batch_size: int | None = None,
                 precision: str = "float32") -> None:
        self.s2m_net = s2m_net
        self.num_objects = num_objects
        self.ignore_class = ignore_class  # canvas value meaning "no scribble" (0 is the background label)
        self.device = device
        self.batch_size = batch_size
        # "float32" (exact) or a reduced precision the network runs under autocast (util.precision)
        self.precision = precision_name(precision)
        self._autocast_dtype = autocast_dtype(self.precision)

    def interact(self, image: torch.Tensor, prev_mask: torch.Tensor,
                 scribbles: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``image`` 1×3×H'×W' (normalised, padded), ``prev_mask`` 1×H'×W' uint8 (padded hard labels),
        ``scribbles`` H×W uint8 at the true size (255 none, 0 background, k object k) →
        ``K×1×H'×W'`` sigmoid probabilities (no background channel), float32 on ``device`` (computed in
        ``precision``)."""
        image = image.to(self.device, non_blocking=True)
        prev_mask = prev_mask.to(self.device, non_blocking=True) if isinstance(prev_mask, torch.Tensor) else prev_mask
        if self._autocast_dtype is None:
            return scribbles_to_probabilities(self.s2m_net, image, prev_mask, scribbles, self.num_objects,
                                              self.ignore_class, dilate=False, batch_size=self.batch_size)
        with torch.autocast(device_type=torch.device(self.device).type, dtype=self._autocast_dtype):
            prob = scribbles_to_probabilities(self.s2m_net, image, prev_mask, scribbles, self.num_objects,
                                              self.ignore_class, dilate=False, batch_size=self.batch_size)
        return prob.float()


def davis_scribbles_to_mask(s2m_net: nn.Module, image: torch.Tensor, prev_mask: np.ndarray | torch.Tensor,
                            scribble_map: np.ndarray | torch.Tensor, num_objects: int,
                            batch_size: int | None = None) -> torch.Tensor:
    """The DAVIS evaluator's scribble → mask step (``DAVISProcessor.to_mask`` after rasterisation).

    ``scribble_map``: ``H'×W'`` integer map from davisinteractive's ``scribbles2mask`` at the padded
    size (−1 none, 0 background, k object k). ``image`` ``1×3×H'×W'`` (padded), ``prev_mask`` the
    processor's hard labels of that frame ``1×H'×W'``. Both scribble maps are dilated by 3×3.
    Returns the hard-aggregated one-hot-like mask ``(K+1)×1×H'×W'`` (background channel 0).
    """
    prob = scribbles_to_probabilities(s2m_net, image, prev_mask, scribble_map, num_objects, DAVIS_NO_SCRIBBLE,
                                      dilate=True, batch_size=batch_size)
    return aggregate_wbg(prob, keep_bg=True, hard=True)
