"""Input transforms of the f-BRS predictor: zoom-in crop, longest-side limit, sigmoid, flip.

Each transform maps (image 1×3×H×W or B×3×H×W, clicks_lists) forwards and a prediction backwards
(``inv_transform``); the predictor applies them in order and inverts them in reverse order. All
bounding boxes are inclusive ``(rmin, rmax, cmin, cmax)``. Rounding uses Python's ``round`` (half to
even) wherever the original does — it decides ROI borders.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .clicker import Click

BBox = tuple[int, int, int, int]
ClicksLists = list[list[Click]]


# ----------------------------------------------------------------------------- bounding boxes
def get_bbox_from_mask(mask: np.ndarray) -> BBox:
    """Inclusive bbox of the True pixels of a non-empty 2-D mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_bbox(bbox: BBox, expand_ratio: float, min_crop_size: float | None = None) -> BBox:
    """Scale a bbox about its centre by ``expand_ratio`` (each side at least ``min_crop_size``)."""
    rmin, rmax, cmin, cmax = bbox
    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    height = expand_ratio * (rmax - rmin + 1)
    width = expand_ratio * (cmax - cmin + 1)
    if min_crop_size is not None:
        height = max(height, min_crop_size)
        width = max(width, min_crop_size)
    # Python round = half to even, as the original
    return (int(round(rcenter - 0.5 * height)), int(round(rcenter + 0.5 * height)),
            int(round(ccenter - 0.5 * width)), int(round(ccenter + 0.5 * width)))


def clamp_bbox(bbox: BBox, rmin: int, rmax: int, cmin: int, cmax: int) -> BBox:
    return max(rmin, bbox[0]), min(rmax, bbox[1]), max(cmin, bbox[2]), min(cmax, bbox[3])


def _segments_iou(s1: tuple[int, int], s2: tuple[int, int]) -> float:
    a, b = s1
    c, d = s2
    intersection = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return intersection / union


def get_bbox_iou(b1: BBox, b2: BBox) -> float:
    """IoU of two boxes as the product of the row and column segment IoUs (original definition)."""
    return _segments_iou(b1[:2], b2[:2]) * _segments_iou(b1[2:4], b2[2:4])


def get_object_roi(pred_mask: np.ndarray, clicks_list: list[Click], expansion_ratio: float,
                   min_crop_size: float) -> BBox:
    """Bbox of the mask ∪ positive clicks (truncated to pixels), expanded and clamped to the image."""
    pred_mask = pred_mask.copy()
    for click in clicks_list:
        if click.is_positive:
            pred_mask[int(click.coords[0]), int(click.coords[1])] = True
    bbox = expand_bbox(get_bbox_from_mask(pred_mask), expansion_ratio, min_crop_size)
    h, w = pred_mask.shape
    return clamp_bbox(bbox, 0, h - 1, 0, w - 1)


def get_roi_image_nd(image_nd: torch.Tensor, object_roi: BBox, target_size: int) -> torch.Tensor:
    """Crop ``object_roi`` and resize it (bilinear, align_corners=True) so its longer side is ``target_size``."""
    rmin, rmax, cmin, cmax = object_roi
    height, width = rmax - rmin + 1, cmax - cmin + 1
    scale = target_size / max(height, width)
    new_size = (int(round(height * scale)), int(round(width * scale)))
    with torch.no_grad():
        return F.interpolate(image_nd[:, :, rmin:rmax + 1, cmin:cmax + 1], size=new_size,
                             mode="bilinear", align_corners=True)


def check_object_roi(object_roi: BBox, clicks_list: list[Click]) -> bool:
    """True if every positive click lies inside the ROI (bottom/right border excluded, as the original)."""
    for click in clicks_list:
        if click.is_positive:
            if click.coords[0] < object_roi[0] or click.coords[0] >= object_roi[1]:
                return False
            if click.coords[1] < object_roi[2] or click.coords[1] >= object_roi[3]:
                return False
    return True


# ----------------------------------------------------------------------------- transforms
class BaseTransform:
    """``transform`` forwards, ``inv_transform`` backwards; ``image_changed`` = new network input."""

    def __init__(self) -> None:
        self.image_changed = False

    def transform(self, image_nd: torch.Tensor, clicks_lists: ClicksLists) -> tuple[torch.Tensor, ClicksLists]:
        raise NotImplementedError

    def inv_transform(self, prob_map: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def get_state(self) -> Any:
        return None

    def set_state(self, state: Any) -> None:
        pass


class ZoomIn(BaseTransform):
    """From click ``skip_clicks + 1`` on, run the network on a crop around the previous prediction.

    The crop = bbox of (previous mask ∪ positive clicks) × ``expansion_ratio`` (min ``min_crop_size``),
    resized so its longer side is ``target_size``; it is kept while all positive clicks stay inside
    and the new bbox overlaps it with IoU >= ``recompute_thresh_iou``. The inverse pastes the
    prediction back into a zero map of the input size.
    """

    def __init__(self, target_size: int = 400, skip_clicks: int = 1, expansion_ratio: float = 1.4,
                 min_crop_size: int = 200, recompute_thresh_iou: float = 0.5, prob_thresh: float = 0.5):
        super().__init__()
        self.target_size = target_size
        self.min_crop_size = min_crop_size
        self.skip_clicks = skip_clicks
        self.expansion_ratio = expansion_ratio
        self.recompute_thresh_iou = recompute_thresh_iou
        self.prob_thresh = prob_thresh
        self.reset()

    def reset(self) -> None:
        self._input_image_shape: torch.Size | None = None
        self._object_roi: BBox | None = None
        self._prev_probs: np.ndarray | None = None  # 1×1×H×W of the transform's input
        self._roi_image: torch.Tensor | None = None
        self.image_changed = False

    def transform(self, image_nd: torch.Tensor, clicks_lists: ClicksLists) -> tuple[torch.Tensor, ClicksLists]:
        assert image_nd.shape[0] == 1 and len(clicks_lists) == 1
        self.image_changed = False
        clicks_list = clicks_lists[0]
        if len(clicks_list) <= self.skip_clicks:
            return image_nd, clicks_lists

        self._input_image_shape = image_nd.shape
        current_object_roi = None
        if self._prev_probs is not None:
            current_pred_mask = (self._prev_probs > self.prob_thresh)[0, 0]
            if current_pred_mask.any():
                current_object_roi = get_object_roi(current_pred_mask, clicks_list, self.expansion_ratio,
                                                    self.min_crop_size)
        if current_object_roi is None:
            return image_nd, clicks_lists

        if (self._object_roi is None or not check_object_roi(self._object_roi, clicks_list)
                or get_bbox_iou(current_object_roi, self._object_roi) < self.recompute_thresh_iou):
            self._object_roi = current_object_roi
            self._roi_image = get_roi_image_nd(image_nd, self._object_roi, self.target_size)
            self.image_changed = True

        return self._roi_image.to(image_nd.device), [self._transform_clicks(clicks_list)]

    def inv_transform(self, prob_map: torch.Tensor) -> torch.Tensor:
        if self._object_roi is None:
            self._prev_probs = prob_map.float().cpu().numpy()
            return prob_map
        assert prob_map.shape[0] == 1
        rmin, rmax, cmin, cmax = self._object_roi
        prob_map = F.interpolate(prob_map, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear",
                                 align_corners=True)
        if self._prev_probs is not None:
            full = torch.zeros(self._prev_probs.shape, device=prob_map.device, dtype=prob_map.dtype)
            full[:, :, rmin:rmax + 1, cmin:cmax + 1] = prob_map
            prob_map = full
        self._prev_probs = prob_map.float().cpu().numpy()
        return prob_map

    def check_possible_recalculation(self) -> bool:
        """Whether the first prediction should be redone zoomed in (only when ``skip_clicks`` == 0)."""
        if self._prev_probs is None or self._object_roi is not None or self.skip_clicks > 0:
            return False
        pred_mask = (self._prev_probs > self.prob_thresh)[0, 0]
        if pred_mask.any():
            possible = get_object_roi(pred_mask, [], self.expansion_ratio, self.min_crop_size)
            image_roi = (0, self._input_image_shape[2] - 1, 0, self._input_image_shape[3] - 1)
            return get_bbox_iou(possible, image_roi) < 0.50
        return False

    def get_state(self) -> tuple:
        roi_image = self._roi_image.cpu() if self._roi_image is not None else None
        return self._input_image_shape, self._object_roi, self._prev_probs, roi_image, self.image_changed

    def set_state(self, state: tuple) -> None:
        (self._input_image_shape, self._object_roi, self._prev_probs, self._roi_image,
         self.image_changed) = state

    def _transform_clicks(self, clicks_list: list[Click]) -> list[Click]:
        if self._object_roi is None:
            return clicks_list
        rmin, rmax, cmin, cmax = self._object_roi
        crop_height, crop_width = self._roi_image.shape[2:]
        return [Click(c.is_positive, (crop_height * (c.coords[0] - rmin) / (rmax - rmin + 1),
                                      crop_width * (c.coords[1] - cmin) / (cmax - cmin + 1)))
                for c in clicks_list]


class LimitLongestSide(ZoomIn):
    """Downscale the whole input so its longer side is ``max_size`` (no-op for smaller inputs).

    As the original, a no-op call keeps the ROI of an earlier downscaling call, so the inverse
    still resizes to that earlier input's size.
    """

    def __init__(self, max_size: int = 800):
        super().__init__(target_size=max_size, skip_clicks=0)

    def transform(self, image_nd: torch.Tensor, clicks_lists: ClicksLists) -> tuple[torch.Tensor, ClicksLists]:
        assert image_nd.shape[0] == 1 and len(clicks_lists) == 1
        self.image_changed = False
        if max(image_nd.shape[2:4]) <= self.target_size:
            return image_nd, clicks_lists
        self._object_roi = (0, image_nd.shape[2] - 1, 0, image_nd.shape[3] - 1)
        self._roi_image = get_roi_image_nd(image_nd, self._object_roi, self.target_size)
        self.image_changed = True
        return self._roi_image, [self._transform_clicks(clicks_lists[0])]


class SigmoidForPred(BaseTransform):
    """Logits -> probabilities on the way back."""

    def transform(self, image_nd: torch.Tensor, clicks_lists: ClicksLists) -> tuple[torch.Tensor, ClicksLists]:
        return image_nd, clicks_lists

    def inv_transform(self, prob_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(prob_map)


class AddHorizontalFlip(BaseTransform):
    """Batch the image with its mirror (clicks mirrored: col -> W - col - 1); average back."""

    def transform(self, image_nd: torch.Tensor, clicks_lists: ClicksLists) -> tuple[torch.Tensor, ClicksLists]:
        assert image_nd.dim() == 4
        image_nd = torch.cat([image_nd, torch.flip(image_nd, dims=[3])], dim=0)
        width = image_nd.shape[3]
        flipped = [[Click(c.is_positive, (c.coords[0], width - c.coords[1] - 1)) for c in clicks]
                   for clicks in clicks_lists]
        return image_nd, clicks_lists + flipped

    def inv_transform(self, prob_map: torch.Tensor) -> torch.Tensor:
        assert prob_map.dim() == 4 and prob_map.shape[0] % 2 == 0
        n = prob_map.shape[0] // 2
        return 0.5 * (prob_map[:n] + torch.flip(prob_map[n:], dims=[3]))
