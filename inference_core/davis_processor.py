"""The bridge between the DAVIS interactive track and the inference core (the original ``DAVISProcessor``).

One processor serves one evaluation *sample* (a sequence with one set of initial scribbles). Every
interaction turns the robot's scribble into a mask with S2M and then, following the original's fixed
schedule, either only shows it on its frame or propagates it through the clip:

* the robot's scribble (davisinteractive format, ``only_last=True``: strokes on one frame) is rasterised
  by davisinteractive's own ``scribbles2mask`` at the **padded** size ``H'×W'``. The original padded its
  images before reading their size, so normalised stroke coordinates are scaled by ``(W'−1, H'−1)``:
  strokes are stretched over the pad area by a few pixels instead of being offset by it. We do the same,
  on purpose, because it changes which pixels S2M sees;
* S2M (all objects in one batch) gets the padded image of the interacted frame, the core's current hard
  mask there (``== k``), and the positive / negative scribble maps dilated by 3×3; the per-object
  probabilities are hard-aggregated with background;
* interactions with 0-based index 2, 5 and 7 call :meth:`InferenceCore.interact` (propagate + fuse) and
  let the robot pick the worst frame of the clip (``next_masks=None``); all others only call
  ``update_mask_only`` and ask the robot to scribble on the same frame again (``next_masks=[idx]``).
  With 8 interactions that is three propagation rounds after 3, 3 and 2 scribbles. The original has no
  rule past its schedule (it crashes at a 9th interaction); here every later interaction propagates;
* an **all-empty** scribble (the robot returns one when its chosen frame is already perfect) is handled
  as the original does: no frame has strokes, so the interacted frame falls through to the *last* frame
  of the clip and S2M runs there without strokes.

Returned masks are un-padded, ``T×H×W`` uint8, ready for ``DavisInteractiveSession.submit_masks``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import util.davis_compat  # noqa: F401  (before davisinteractive: np.int etc. used by scribbles2mask)
from davisinteractive.utils.scribbles import scribbles2mask
from inference_core.core import InferenceCore
from inference_core.frames import FrameSource
from inference_core.interaction.s2m_controller import davis_scribbles_to_mask

__all__ = ["DAVISProcessor", "DAVIS_SCHEDULE", "interacted_frame"]

# 0-based interaction indices that propagate (the original's davis_schedule)
DAVIS_SCHEDULE: tuple[int, ...] = (2, 5, 7)


def interacted_frame(scribble: Mapping[str, Any]) -> int:
    """The frame the robot scribbled on: the first frame with strokes.

    An all-empty scribble has none; like the original's loop (whose index stays at its last value) this
    returns the clip's last frame then.
    """
    frames = scribble["scribbles"]
    if len(frames) == 0:
        raise ValueError("scribble: the 'scribbles' list is empty; expected one (possibly empty) list per frame")
    for idx, strokes in enumerate(frames):
        if len(strokes) != 0:
            return idx
    return len(frames) - 1


class DAVISProcessor:
    """One DAVIS interactive sample: robot scribbles in, ``T×H×W`` uint8 masks out.

    Args:
        prop_net, fuse_net: propagation and fusion networks (eval mode), as for :class:`InferenceCore`.
        s2m_net: the S2M network (``deeplabv3plus_resnet50``, eval mode).
        images: the sequence, as :class:`InferenceCore` takes it: uint8 frames ``T×H×W×3`` (any frame
            source) or a normalised float tensor ``1×T×3×H×W``. The core pads to /16 itself.
        num_objects: K, object ids 1..K.
        device: where the networks run (default: CUDA if available, else CPU).
        mem_freq: the core's memory period (the original's default 5).
        schedule: 0-based interaction indices that propagate (default the original's ``(2, 5, 7)``).
        s2m_batch_size: cap on objects per S2M call (None: all at once).
    """

    def __init__(self, prop_net: nn.Module, fuse_net: nn.Module | None, s2m_net: nn.Module,
                 images: torch.Tensor | FrameSource | Sequence[np.ndarray], num_objects: int,
                 device: torch.device | str | None = None, mem_freq: int = 5,
                 schedule: Sequence[int] = DAVIS_SCHEDULE, s2m_batch_size: int | None = None) -> None:
        self.core = InferenceCore(prop_net, fuse_net, images, num_objects, mem_profile=0, mem_freq=mem_freq,
                                  device=device)
        self.device = self.core.device
        self.s2m_net = s2m_net.to(self.device)
        self.s2m_batch_size = s2m_batch_size
        self.t, self.h, self.w = self.core.t, self.core.h, self.core.w
        self.nh, self.nw = self.core.nh, self.core.nw  # the size scribbles are rasterised at
        self.schedule = tuple(sorted(int(i) for i in schedule))
        self.interaction_count = 0

    @property
    def k(self) -> int:
        """K, the number of objects (the core's count)."""
        return self.core.num_objects

    # ------------------------------------------------------------------ scribble → mask
    def scribble_map(self, scribble: Mapping[str, Any]) -> tuple[np.ndarray, int]:
        """Rasterise the robot's scribble: (``H'×W'`` int map, −1 none / 0 background / k object k; frame index).

        Only the interacted frame's strokes are kept (``only_last=True`` gives strokes on one frame).
        """
        idx = interacted_frame(scribble)
        frames = scribble["scribbles"]
        if len(frames) != self.t:
            raise ValueError(f"scribble: has {len(frames)} frame entries but the sequence has {self.t} frames")
        one_frame = {"sequence": scribble.get("sequence"), "scribbles": [frames[idx]]}
        return scribbles2mask(one_frame, (self.nh, self.nw))[0], idx

    @torch.no_grad()
    def to_mask(self, scribble: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """S2M on the interacted frame: (hard one-hot-like mask ``(K+1)×1×H'×W'`` with background, frame)."""
        scribble_map, idx = self.scribble_map(scribble)
        mask = davis_scribbles_to_mask(self.s2m_net, self.core.get_image(idx), self.core.get_mask(idx),
                                       scribble_map, self.k, batch_size=self.s2m_batch_size)
        return mask, idx

    # ------------------------------------------------------------------ one interaction
    def propagates(self, interaction: int) -> bool:
        """Whether 0-based ``interaction`` propagates (on the schedule, or past its end)."""
        return interaction in self.schedule or (not self.schedule or interaction > self.schedule[-1])

    @torch.no_grad()
    def interact(self, scribble: Mapping[str, Any]) -> tuple[np.ndarray, list[int] | None, int]:
        """One robot interaction → (masks ``T×H×W`` uint8 (a copy), ``next_scribble_frame_candidates``, frame)."""
        mask, idx = self.to_mask(scribble)
        # a single-frame clip has nothing to propagate to; showing the mask is all there is
        if self.propagates(self.interaction_count) and self.t > 1:
            masks = self.core.interact(mask, idx)
            next_frames = None
        else:
            masks = self.core.update_mask_only(mask, idx)
            next_frames = [idx]
        self.interaction_count += 1
        # the core's masks are a live, un-padded view of its state: hand out a copy
        return np.array(masks, dtype=np.uint8, copy=True), next_frames, idx
