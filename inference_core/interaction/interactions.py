"""Qt-free interactions of the annotation GUI.

An interaction turns user input on one frame into a background-included mask
``out_mask`` ``(K+1)×1×H'×W'`` (padded to /16) and keeps the soft object probabilities
``out_prob`` ``K×1×H'×W'`` (no background) that the next interaction on the frame starts from.

* :class:`ClickInteraction` – f-BRS clicks for one object; hard ``aggregate_sbg``.
* :class:`ScribbleInteraction` – S2M scribbles (255 = none, 0 = background, k = object); hard
  ``aggregate_wbg``.
* :class:`FreeInteraction` – direct painting on the probabilities; soft ``aggregate_sbg``.
* :class:`CropperInteraction` / :class:`LocalInteraction` – enter / leave local (cropped) editing;
  the crop is stitched back without a 3-px margin; soft ``aggregate_sbg``.

Coordinates are ``(x, y)`` floats in the unpadded image (or crop) of the interaction; they are
rounded only when drawn. Strokes and clicks can also be drawn onto a :class:`StrokeCanvas` for
display, so no view code lives here.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import cv2
import numpy as np
import torch

from model.aggregate import aggregate_sbg, aggregate_wbg
from util.palette import object_colours
from util.tensor_util import Pad, pad_divide_by, unpad

MAX_HISTORY = 50          # undo depth of one interaction (as the original)
SCRIBBLE_THICKNESS = 3    # S2M strokes are always 3 px wide
STROKE_ALPHA = 0.75       # opacity of scribble / free strokes in the display layer
CLICK_RADIUS = 2          # radius of a click dot in the display layer
LOCAL_MARGIN = 3          # pixels of the local crop border that are not pasted back

BBox = tuple[int, int, int, int]   # (lx, ux, ly, uy), inclusive, unpadded image coordinates


class ScribbleController(Protocol):
    def interact(self, image: torch.Tensor, prev_mask: torch.Tensor, scribbles: np.ndarray) -> torch.Tensor: ...


class ClickController(Protocol):
    def interact(self, image: torch.Tensor, x: float, y: float, is_positive: bool) -> torch.Tensor: ...

    def undo_click(self) -> torch.Tensor | None: ...


def _pt(p: tuple[float, float]) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


class StrokeCanvas:
    """Display layer of strokes: ``colour`` ``H×W×3`` uint8 and ``alpha`` ``H×W×1`` float32.

    Composite with ``image*(1-alpha) + colour*alpha``. Snapshots allow the view to undo strokes.
    """

    def __init__(self, h: int, w: int, num_objects: int):
        self.colour = np.zeros((h, w, 3), dtype=np.uint8)
        self.alpha = np.zeros((h, w, 1), dtype=np.float32)
        self.num_objects = num_objects

    def _colour_of(self, label: int) -> tuple[int, int, int]:
        cols = object_colours(max(self.num_objects, label))
        return tuple(int(c) for c in cols[label])

    def line(self, p1, p2, label: int, thickness: int, alpha: float = STROKE_ALPHA) -> None:
        cv2.line(self.colour, _pt(p1), _pt(p2), self._colour_of(label), thickness=thickness)
        cv2.line(self.alpha, _pt(p1), _pt(p2), alpha, thickness=thickness)

    def dot(self, p, label: int, radius: int = CLICK_RADIUS, alpha: float = 1.0) -> None:
        cv2.circle(self.colour, _pt(p), radius, self._colour_of(label), thickness=-1)
        cv2.circle(self.alpha, _pt(p), radius, alpha, thickness=-1)

    def clear(self) -> None:
        self.colour.fill(0)
        self.alpha.fill(0)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.colour.copy(), self.alpha.copy()

    def restore(self, snap: tuple[np.ndarray, np.ndarray]) -> None:
        self.colour[...] = snap[0]
        self.alpha[...] = snap[1]

    def composite(self, image: np.ndarray) -> np.ndarray:
        """``image`` ``H×W×3`` uint8 with the strokes blended on top."""
        if not self.alpha.any():
            return image
        out = image * (1 - self.alpha) + self.colour * self.alpha
        return out.astype(np.uint8)


class Interaction:
    """Base class. ``image`` ``1×3×H'×W'`` normalised padded frame (or crop); ``true_size`` (h, w)."""

    name = "Interaction"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, true_size: tuple[int, int]):
        self.image = image
        self.prev_mask = prev_mask.clone()
        self.h, self.w = true_size
        self.out_prob: torch.Tensor | None = None   # K×1×H'×W' soft object probabilities
        self.out_mask: torch.Tensor | None = None   # (K+1)×1×H'×W' background included

    def can_undo(self) -> bool:
        return False

    def undo(self) -> torch.Tensor:
        raise RuntimeError(f"{self.name} interaction has nothing to undo")

    def predict(self) -> torch.Tensor:
        return self.out_mask


class _StrokeInteraction(Interaction):
    """Shared stroke bookkeeping of scribble and free-hand painting.

    Each stroke is a path of points of one label; a segment is drawn between consecutive points.
    ``end_path`` snapshots the drawing; undo returns to the snapshot before the last stroke. The
    first stroke cannot be undone inside the interaction (the caller then drops the whole
    interaction, exactly as the original GUI does).
    """

    def __init__(self, image, prev_mask, true_size, num_objects: int):
        super().__init__(image, prev_mask, true_size)
        self.K = num_objects
        self.curr_path: list[tuple[float, float]] = []
        self.curr_label: int | None = None
        self.history: list = []           # drawn-map snapshots after each completed stroke

    def _draw_segment(self, p1, p2, label: int) -> None:
        raise NotImplementedError

    def _thickness(self) -> int:
        raise NotImplementedError

    def push_point(self, x: float, y: float, label: int, vis: StrokeCanvas | None = None) -> None:
        """Add a point to the current stroke of ``label`` (0 = background, k = object k)."""
        if self.curr_label is not None and label != self.curr_label:
            # the original keeps one path per label; a label change mid-drag starts a new path
            self.curr_path = []
        self.curr_label = label
        self.curr_path.append((x, y))
        if len(self.curr_path) >= 2:
            p1, p2 = self.curr_path[-2], self.curr_path[-1]
            self._draw_segment(p1, p2, label)
            if vis is not None:
                vis.line(p1, p2, label, self._thickness())

    def end_path(self) -> None:
        self.curr_path = []
        self.curr_label = None
        self.history.append(self._snapshot())
        if len(self.history) > MAX_HISTORY:
            self.history.pop(0)

    def can_undo(self) -> bool:
        return len(self.history) >= 2

    def undo(self) -> torch.Tensor:
        if not self.can_undo():
            raise RuntimeError(f"{self.name} interaction has nothing to undo")
        self.history.pop()
        self._restore(self.history[-1])
        self.curr_path = []
        self.curr_label = None
        return self.predict()

    def _snapshot(self):
        return self.drawn_map.copy()

    def _restore(self, snap) -> None:
        self.drawn_map = snap.copy()


class ScribbleInteraction(_StrokeInteraction):
    """S2M scribbles. ``prev_mask``: hard label map ``1×H'×W'`` uint8 (padded), frozen at creation.

    ``drawn_map`` ``h×w`` uint8: 255 = no scribble, 0 = background, k = object k (3-px lines).
    """

    name = "Scribble"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, true_size: tuple[int, int],
                 controller: ScribbleController, num_objects: int):
        super().__init__(image, prev_mask, true_size, num_objects)
        self.controller = controller
        self.drawn_map = np.full((self.h, self.w), 255, dtype=np.uint8)

    def _thickness(self) -> int:
        return SCRIBBLE_THICKNESS

    def _draw_segment(self, p1, p2, label: int) -> None:
        cv2.line(self.drawn_map, _pt(p1), _pt(p2), int(label), thickness=SCRIBBLE_THICKNESS)

    def predict(self) -> torch.Tensor:
        self.out_prob = self.controller.interact(self.image, self.prev_mask, self.drawn_map)
        self.out_mask = aggregate_wbg(self.out_prob, keep_bg=True, hard=True)
        return self.out_mask


class FreeInteraction(_StrokeInteraction):
    """Free-hand painting on the soft probabilities ``prev_mask`` ``K×1×H'×W'`` (padded by ``pad``).

    A stroke of object k sets channel k to 1 and every other channel to 0 under the brush;
    a background stroke (label 0) sets all channels to 0. Result: soft ``aggregate_sbg``.
    """

    name = "Free"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, true_size: tuple[int, int],
                 num_objects: int, pad: Pad, brush_size: int = 3):
        super().__init__(image, prev_mask, true_size, num_objects)
        self.pad = pad
        self.drawn_map = np.ascontiguousarray(unpad(self.prev_mask, pad).detach().float().cpu().numpy()).copy()
        self.size = int(brush_size)

    def set_size(self, size: int) -> None:
        self.size = int(size)

    def _thickness(self) -> int:
        return self.size

    def _draw_segment(self, p1, p2, label: int) -> None:
        for i in range(self.K):
            cv2.line(self.drawn_map[i, 0], _pt(p1), _pt(p2), float((i + 1) == label), thickness=self.size)

    def predict(self) -> torch.Tensor:
        prob = torch.from_numpy(self.drawn_map).to(self.image.device)
        self.out_prob, _ = pad_divide_by(prob, 16)
        self.out_mask = aggregate_sbg(self.out_prob, keep_bg=True)
        return self.out_mask


class ClickInteraction(Interaction):
    """f-BRS clicks on object ``tar_obj`` (1-based). ``prev_mask``: soft ``K×1×H'×W'``.

    The f-BRS output (binary ``1×1×H'×W'``) replaces channel ``tar_obj-1``; the others keep their
    soft values; result ``aggregate_sbg(hard=True)``. ``pad`` maps unpadded click coordinates
    onto the padded image the controller sees.
    """

    name = "Click"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, true_size: tuple[int, int],
                 controller: ClickController, tar_obj: int, pad: Pad):
        super().__init__(image, prev_mask, true_size)
        self.controller = controller
        self.tar_obj = int(tar_obj)
        self.pad = pad
        self.clicks: list[tuple[float, float, bool]] = []   # (x, y, is_positive)
        self.obj_mask: torch.Tensor | None = None
        self.out_prob = self.prev_mask.clone()

    def push_point(self, x: float, y: float, neg: bool, vis: StrokeCanvas | None = None) -> None:
        """Add a click (``neg``: negative click) and run f-BRS."""
        self.clicks.append((x, y, not neg))
        self.obj_mask = self.controller.interact(self.image, x + self.pad[0], y + self.pad[2], not neg)
        if len(self.clicks) > MAX_HISTORY:
            self.clicks.pop(0)
        if vis is not None:
            vis.dot((x, y), 0 if neg else self.tar_obj)

    def predict(self) -> torch.Tensor:
        if self.obj_mask is None:
            self.out_prob = self.prev_mask.clone()
        else:
            self.out_prob = self.out_prob.clone()
            self.out_prob[self.tar_obj - 1] = self.obj_mask.reshape(self.out_prob[self.tar_obj - 1].shape)
        self.out_mask = aggregate_sbg(self.out_prob, keep_bg=True, hard=True)
        return self.out_mask

    def can_undo(self) -> bool:
        return len(self.clicks) >= 2

    def undo(self) -> torch.Tensor:
        if not self.can_undo():
            raise RuntimeError("Click interaction has nothing to undo")
        self.clicks.pop()
        self.obj_mask = self.controller.undo_click()
        return self.predict()


class CropperInteraction(Interaction):
    """Enter local mode: crop ``bbox`` from the padded frame and soft mask and re-pad the crops.

    ``image`` ``1×3×H'×W'``, ``prev_mask`` ``K×1×H'×W'`` soft, ``pad`` = the frame's pad.
    Provides ``im_crop`` ``1×3×h'×w'``, ``pad`` (the local pad) and ``out_prob``/``out_mask``.
    """

    name = "Crop"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, pad: Pad, bbox: BBox):
        lx, ux, ly, uy = bbox
        super().__init__(image, prev_mask, (uy - ly + 1, ux - lx + 1))
        self.bounding_box = bbox
        prob_crop = unpad(self.prev_mask, pad)[:, :, ly:uy + 1, lx:ux + 1]
        self.out_prob, self.pad = pad_divide_by(prob_crop, 16)
        self.out_mask = aggregate_sbg(self.out_prob, keep_bg=True)
        im_crop = unpad(image, pad)[:, :, ly:uy + 1, lx:ux + 1]
        self.im_crop, _ = pad_divide_by(im_crop, 16)


class LocalInteraction(Interaction):
    """Leave local mode: paste the local result ``region_prob`` (``K×1×h'×w'``, padded by
    ``local_pad``) into the global soft mask ``prev_mask`` (``K×1×H'×W'``, padded by ``pad``).

    Boxes larger than 6 px in both directions are pasted without a 3-px margin on every side
    (the border of a crop is unreliable); result soft ``aggregate_sbg``.
    """

    name = "Local"

    def __init__(self, image: torch.Tensor, prev_mask: torch.Tensor, true_size: tuple[int, int],
                 bbox: BBox, region_prob: torch.Tensor, pad: Pad, local_pad: Pad):
        super().__init__(image, prev_mask, true_size)
        lx, ux, ly, uy = bbox
        out = unpad(self.prev_mask, pad).clone()
        region = unpad(region_prob, local_pad)
        m = LOCAL_MARGIN
        if (ux - lx) > 2 * m and (uy - ly) > 2 * m:
            out[:, :, ly + m:uy - m + 1, lx + m:ux - m + 1] = region[:, :, m:-m, m:-m]
        else:
            out[:, :, ly:uy + 1, lx:ux + 1] = region
        self.bounding_box = bbox
        self.out_prob, _ = pad_divide_by(out, 16)
        self.out_mask = aggregate_sbg(self.out_prob, keep_bg=True)


def bbox_from_points(p1: Sequence[float], p2: Sequence[float]) -> BBox:
    """Inclusive ``(lx, ux, ly, uy)`` of the rectangle dragged from ``p1`` to ``p2`` (rounded)."""
    lx = int(round(min(p1[0], p2[0])))
    ux = int(round(max(p1[0], p2[0])))
    ly = int(round(min(p1[1], p2[1])))
    uy = int(round(max(p1[1], p2[1])))
    return lx, ux, ly, uy
