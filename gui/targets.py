"""Edit targets of the annotation GUI: what the user draws on now (Qt-free).

A target is either the whole current frame (:class:`FrameTarget`) or a zoomed crop of it in local
control (:class:`LocalTarget`). Each carries everything one editing context needs, so the controller
never branches on "local or not" for bookkeeping:

* ``interaction``: the interaction being drawn (``None`` between interactions);
* ``history``: the completed interactions of this context (undo walks back through them);
* ``mask``: the result of the interactions, ``(K+1)×1×H'×W'`` (background first, padded);
* ``canvas`` / ``canvas_history``: the stroke layer shown on top of the image and its snapshots;
* ``image`` / ``pad`` / ``height`` / ``width``: the network input and the true size it was padded from.

Object count: a target never stores one. Interactions get the core's count when they are created;
adding an object resets the target, so no interaction outlives a change of the count.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from inference_core.interaction.interactions import CropperInteraction, Interaction, StrokeCanvas
from model.aggregate import hard_labels
from util.tensor_util import Pad, unpad

STROKE_HISTORY = 100


def stroke_canvas(height: int, width: int) -> StrokeCanvas:
    """An empty stroke layer. It needs no object count: a label's colour depends on the label only."""
    return StrokeCanvas(height, width, 0)


class EditTarget:
    """Shared bookkeeping of the frame and the local crop (see the module docstring)."""

    #: interactions at the bottom of ``history`` that undo never removes (the local crop keeps its cropper)
    keep = 0

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)
        self.interaction: Interaction | None = None
        self.history: list[Interaction] = []
        self.mask: torch.Tensor | None = None
        self.canvas = stroke_canvas(self.height, self.width)
        self.canvas_history: deque = deque(maxlen=STROKE_HISTORY)

    # --- what subclasses provide
    @property
    def image(self) -> torch.Tensor:
        """Network input ``1×3×H'×W'`` (normalised, padded)."""
        raise NotImplementedError

    @property
    def pad(self) -> Pad:
        raise NotImplementedError

    def base_prob(self) -> torch.Tensor:
        """``(K+1)×1×H'×W'`` probabilities before any interaction of this context."""
        raise NotImplementedError

    def prev_hard(self) -> torch.Tensor:
        """``1×H'×W'`` uint8 labels a new scribble interaction starts from."""
        raise NotImplementedError

    def show(self) -> None:
        """Make ``mask`` the displayed mask of this context."""
        raise NotImplementedError

    # --- shared
    def prev_soft(self) -> torch.Tensor:
        """``K×1×H'×W'`` soft probabilities a new click / free interaction starts from."""
        if self.interaction is not None:
            return self.interaction.out_prob
        if self.history:
            return self.history[-1].out_prob
        return self.base_prob()[1:]

    def snapshot_canvas(self) -> None:
        self.canvas_history.append(self.canvas.snapshot())

    def complete(self) -> None:
        """Close the interaction being drawn: it joins the history, its strokes leave the canvas."""
        if self.interaction is not None:
            self.canvas.clear()
            self.history.append(self.interaction)
            self.interaction = None

    def reset(self) -> None:
        """Drop every interaction of this context (the base ones stay) and the strokes."""
        self.complete()
        self.canvas.clear()
        self.canvas_history.clear()
        self.interaction = None
        self.history = self.history[:self.keep]

    def undo(self) -> None:
        """One step back: inside the interaction being drawn, else the previous interaction, else the
        base state. Runs a network when the restored interaction predicts again (S2M)."""
        it = self.interaction
        if it is not None and it.can_undo():
            self.mask = it.undo()
        else:
            if it is None and len(self.history) > self.keep:
                self.history.pop()
            elif it is not None and len(self.history) > self.keep:
                self.interaction = None
            else:
                self.reset()
            self.mask = self.history[-1].predict() if self.history else self.base_prob().clone()
        if self.canvas_history:
            self.canvas.restore(self.canvas_history.pop())


class FrameTarget(EditTarget):
    """The whole frame ``t`` of the core. ``mask`` outlives a change of frame: it is the user's last
    edit, waiting to be propagated from ``mask_frame``."""

    def __init__(self, core, t: int):
        super().__init__(core.h, core.w)
        self.core = core
        self.t = int(t)
        self.mask_frame: int | None = None

    def move_to(self, t: int) -> None:
        """Show frame ``t``: the interactions of the previous frame are dropped, the pending edit stays."""
        self.reset()
        self.t = int(t)

    @property
    def image(self) -> torch.Tensor:
        return self.core.get_image(self.t)

    @property
    def pad(self) -> Pad:
        return self.core.pad

    def base_prob(self) -> torch.Tensor:
        return self.core.get_prob(self.t)

    def prev_hard(self) -> torch.Tensor:
        return self.core.get_mask(self.t)

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask = mask
        self.mask_frame = self.t

    def show(self) -> None:
        self.core.update_mask_only(self.mask, self.mask_frame)

    def clear_pending(self) -> None:
        self.mask = None
        self.mask_frame = None


class LocalTarget(EditTarget):
    """A crop ``bbox = (lx, ux, ly, uy)`` (inclusive) of the frame, re-padded to /16. Its history
    starts with the cropper (the frame's last propagated probabilities, cut out)."""

    keep = 1

    def __init__(self, frame_image: torch.Tensor, frame_prob: torch.Tensor, frame_pad: Pad, bbox,
                 view_image: np.ndarray):
        lx, ux, ly, uy = bbox
        super().__init__(uy - ly + 1, ux - lx + 1)
        self.bbox = (lx, ux, ly, uy)
        cropper = CropperInteraction(frame_image, frame_prob, frame_pad, self.bbox)
        self.history = [cropper]
        self.mask = cropper.out_mask
        self._image, self._pad = cropper.im_crop, cropper.pad
        self.view_image = view_image          # h×w×3 uint8, the crop as shown
        self.np_mask = np.zeros((self.height, self.width), np.uint8)
        self.show()

    @property
    def image(self) -> torch.Tensor:
        return self._image

    @property
    def pad(self) -> Pad:
        return self._pad

    def base_prob(self) -> torch.Tensor:
        return self.history[0].out_mask

    def prev_hard(self) -> torch.Tensor:
        return hard_labels(self.mask).to(torch.uint8)

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def show(self) -> None:
        hard = hard_labels(self.mask)
        self.np_mask = unpad(hard, self._pad)[0].to(torch.uint8).cpu().numpy()
