"""Semi-supervised propagation (Mask-Propagation evaluation): a given first-frame mask → every frame.

* DAVIS / a single video (:func:`propagate_first_frame`): the project's :class:`InferenceCore` with no
  fusion, interacted once at frame 0 with ``aggregate_wbg(one-hot, keep_bg=True)``. Its memory schedule
  (interacted frame + a frame every ``mem_freq`` + the previous frame as a temporary slot) is exactly
  the original ``inference_core.py``'s forward pass; the backward pass from frame 0 is empty.
* YouTube-VOS (:class:`PerObjectPropagation`): objects appear at different frames, so — as the
  original ``inference_core_yv.py`` — each object has its own memory, started at the frame where it is
  first annotated, and propagation runs segment by segment up to (and including) the next annotated
  frame, where the new objects' ground truth takes priority over the propagated masks. This class is
  built from the core's parts (:class:`PaddedFrames`, :class:`ProbStore`, one
  :class:`~inference_core.memory_bank.PassMemory` per object and pass: the same memory schedule) and the
  network's ``memorize`` / ``get_query_values`` / ``read_memory`` / ``decode``.
* :func:`frame_labels`: un-pad, optionally bilinear-upsample the probabilities, argmax, map indices to ids.

Shapes: K objects, (H, W) processing size, (H', W') padded to /16.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from inference_core.core import InferenceCore
from inference_core.frames import FrameSource, PaddedFrames
from inference_core.memory_bank import PassMemory
from inference_core.prob_store import ProbStore
from model.aggregate import aggregate_wbg, hard_labels
from model.batchnorm_fold import inference_network
from util.memory import mapped_large_blocks
from util.tensor_util import Pad, apply_pad, unpad


def first_frame_probabilities(onehot: torch.Tensor) -> torch.Tensor:
    """One-hot object masks ``K×1×H×W`` (or ``K×H×W``) → ``(K+1)×1×H×W`` background-included
    probabilities, as the original turns the given mask into its frame-0 ``prob``."""
    if onehot.dim() == 3:
        onehot = onehot.unsqueeze(1)
    return aggregate_wbg(onehot.float(), keep_bg=True)


def propagate_first_frame(core: InferenceCore, onehot: torch.Tensor) -> Iterator[tuple[int, int]]:
    """Give ``core`` the frame-0 mask (``K×1×H×W`` one-hot, processing size) and propagate to the end.

    Yields ``(frame, total)`` after each propagated frame (frames 1..T-1 in order, so frame ``t`` is
    final when it is yielded). The caller must exhaust the generator (or close it to cancel).
    A one-frame clip has nothing to propagate: its probabilities are just the given mask."""
    prob = first_frame_probabilities(onehot)
    if core.t == 1:
        core.restore_frame(0, prob)
        return
    steps = core.interact_iter(prob, 0)
    try:
        _, total = next(steps)
        for done, _ in steps:
            yield done, total   # forward pass from frame 0: the done-th step is frame `done`
    finally:
        steps.close()


def frame_labels(prob: torch.Tensor, pad: Pad, size: tuple[int, int] | None = None,
                 label_values: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Padded probabilities ``(K+1)×1×H'×W'`` → ``H×W`` uint8 label map.

    ``size`` (H, W): bilinear upsampling (align_corners=False) of the un-padded probabilities before the
    argmax, as the original's DAVIS 2017 / YouTube output (None keeps the processing size).
    ``label_values``: id written for each object index 1..K (index 0 stays 0); None keeps 1..K.
    """
    prob = unpad(prob, pad)
    if size is not None and tuple(prob.shape[-2:]) != tuple(size):
        prob = F.interpolate(prob, size=tuple(size), mode="bilinear", align_corners=False)
    idx = hard_labels(prob)[0].to("cpu", torch.uint8).numpy()
    if label_values is None:
        return idx
    lut = np.zeros(256, np.uint8)
    lut[1:len(label_values) + 1] = np.asarray(label_values, np.uint8)
    return lut[idx]


class PerObjectPropagation:
    """YouTube-VOS propagation: one memory per object, objects joining at their first annotated frame.

    Args:
        prop_net: ``PropagationNetwork`` (eval mode).
        images: normalised ``1×T×3×H×W`` float tensor or a frame source of ``H×W×3`` uint8 frames.
        num_objects: K (object indices 1..K).
        mem_freq: a propagated frame is committed to memory every ``mem_freq`` frames.
        prob_storage: ``"float32"`` (exact) or ``"uint16"``.

    Use: :meth:`interact` for each annotated frame in time order, then :meth:`get_prob`.
    """

    def __init__(self, prop_net: torch.nn.Module, images: torch.Tensor | FrameSource | Sequence[np.ndarray],
                 num_objects: int, mem_freq: int = 5, device: torch.device | str = "cpu",
                 prob_storage: str = "float32"):
        if num_objects < 1:
            raise ValueError(f"num_objects must be ≥ 1, got {num_objects}")
        self.device = torch.device(device)
        self.prop_net = inference_network(prop_net.to(self.device))   # BatchNorm-folded encoders
        self.mem_freq = mem_freq
        self.k = int(num_objects)
        self.frames = PaddedFrames(images, self.device, keep_all_on_device=False)
        self.t, self.h, self.w = self.frames.t, self.frames.h, self.frames.w
        self.nh, self.nw, self.pad = self.frames.nh, self.frames.nw, self.frames.pad
        self.probs = ProbStore(self.k, self.t, self.nh, self.nw, self.device, prob_storage)
        self.enabled: list[int] = []                       # object indices with a memory, in arrival order
        # object → its memory kept for the whole video: annotations and committed frames
        self.keys: dict[int, torch.Tensor] = {}            # 1×128×N×h×w
        self.values: dict[int, torch.Tensor] = {}          # 1×512×N×h×w
        self.memory_frames: dict[int, list[int]] = {}      # the frame of each of the N entries

    def get_prob(self, t: int) -> torch.Tensor:
        """``(K+1)×1×H'×W'`` probabilities of frame ``t`` (padded)."""
        return self.probs.get(t, self.device)

    def _pad(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(self.device, torch.float32)
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        if tuple(mask.shape[-2:]) == (self.h, self.w):
            mask = apply_pad(mask, self.pad)
        if tuple(mask.shape) != (self.k + 1, 1, self.nh, self.nw):
            raise ValueError(f"mask must be (K+1)×1×H×W = {self.k + 1}×1×{self.h}×{self.w}, got {tuple(mask.shape)}")
        return mask

    @torch.inference_mode()
    def interact(self, mask: torch.Tensor, frame: int, end: int, objects: Sequence[int]) -> None:
        """Ground truth of ``objects`` (indices 1..K) at ``frame`` → propagate frames ``frame+1 .. end-1``.

        ``mask``: ``(K+1)×1×H×W`` background-included one-hot of every object annotated at ``frame``
        (processing size or padded). Objects already enabled keep their memory; an object listed again
        is not duplicated (the original would append it twice)."""
        mask = self._pad(mask)
        objects = [int(o) for o in objects]
        self.enabled.extend(o for o in objects if o not in self.enabled)
        prob = self.probs.get(frame, self.device)
        # the annotation wins where it says "object": clear every channel there, then write it
        region = mask[1:].sum(0) > 0.5
        prob[:, region] = 0
        prob[objects] = mask[objects]
        prob = aggregate_wbg(prob[1:], keep_bg=True)
        self.probs.set(frame, prob)
        key, value = self.prop_net.memorize(self.frames.get(frame), prob[self.enabled])
        for i, obj in enumerate(self.enabled):
            self._append(obj, frame, key[i:i + 1], value[i:i + 1])
        with mapped_large_blocks():   # a long pass keeps the C heap unfragmented (util/memory.py)
            self._pass(frame, end)

    def _append(self, obj: int, t: int, key: torch.Tensor, value: torch.Tensor) -> None:
        if obj in self.keys:
            self.keys[obj] = torch.cat([self.keys[obj], key], 2)
            self.values[obj] = torch.cat([self.values[obj], value], 2)
            self.memory_frames[obj].append(t)
        else:
            self.keys[obj], self.values[obj], self.memory_frames[obj] = key, value, [t]

    def _pass(self, start: int, end: int) -> None:
        frames = range(start + 1, end)
        if len(frames) == 0:
            return
        memories = {obj: PassMemory(self.keys[obj], self.values[obj], self.memory_frames[obj], start, frames,
                                    self.mem_freq) for obj in self.enabled}
        for ti in frames:
            k16, q16, s8, s4 = self.prop_net.get_query_features(self.frames.get(ti))
            # objects have memories of different lengths, so each is read on its own; the decoder then
            # runs once for all of them, sharing the query frame's part (the original decodes object by
            # object: same numbers up to float rounding)
            readouts = torch.cat([self.prop_net.read_memory(*memories[obj].readout(), k16) for obj in self.enabled], 0)
            out = torch.sigmoid(self.prop_net.decoder.decode_with_query_part(readouts, q16, s8, s4))
            out = aggregate_wbg(out, keep_bg=True)
            prob = self.probs.get(ti, self.device)
            prob[0] = out[0]
            prob[self.enabled] = out[1:]
            self.probs.set(ti, prob)
            if memories[self.enabled[0]].wants(ti):
                key, value = self.prop_net.memorize(self.frames.get(ti), out[1:])
                for i, obj in enumerate(self.enabled):
                    memories[obj].add(ti, key[i:i + 1], value[i:i + 1])
        # committed frames stay in each object's memory for the rest of the video
        for obj, memory in memories.items():
            keys, values = memory.committed()
            self.keys[obj], self.values[obj] = keys.clone(), values.clone()
            self.memory_frames[obj] = list(memory.slot_frames)
