"""Held-out quality of propagation weights on generated multi-object clips (J&F and precision agreement).

Trained weights are judged where formula weights cannot be: does the network follow the objects of clips it
never saw? Each held-out clip comes from :func:`dataset.synthetic.make_clip` with a seed outside the training
seeds; frame 0's ground truth is given, the rest is propagated by :class:`InferenceCore` (no fusion, exactly
the semi-supervised path of :mod:`inference_core.semisup`) and scored with :mod:`util.metrics` (all frames
but the given first one).

:func:`evaluate_propagation` returns per-precision mean J&F and, for every reduced precision, the fraction of
pixels whose label equals the float32 run's. :func:`evaluate_fusion` does the same for a second round: the
ground truth of the last frame is given after frame 0's, and the backward pass is fused with the first round
(the interactive loop's difference-aware fusion), against two baselines without a fusion network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dataset.synthetic import Clip, make_clip
from inference_core.core import InferenceCore
from inference_core.semisup import first_frame_probabilities, frame_labels, propagate_first_frame
from util.metrics import evaluate_sequence
from util.tensor_util import apply_pad

# held-out clips use seeds far from any training seed (training uses 0 .. #clips-1 offsets of its own seed)
HELD_OUT_SEED_BASE = 1_000_003


@dataclass
class HeldOutResult:
    """``jf[precision]`` mean J&F over the clips; ``agreement[precision]`` fraction of pixels whose label
    equals float32's (float32 itself: 1.0); ``per_clip[precision]`` the J&F of each clip."""

    jf: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    per_clip: dict[str, list[float]] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {"jf": self.jf, "agreement": self.agreement, "per_clip": self.per_clip}
        if self.baselines:
            out["baselines"] = self.baselines
        return out


def held_out_clips(num_clips: int = 4, num_frames: int = 16, size: tuple[int, int] = (160, 128),
                   num_objects: Sequence[int] = (2, 3), seed: int = HELD_OUT_SEED_BASE) -> list[Clip]:
    """``num_clips`` generated clips (``size`` = (W, H)); objects per clip cycle through ``num_objects``."""
    return [make_clip(num_frames, size[0], size[1], int(num_objects[i % len(num_objects)]), seed=seed + i)
            for i in range(num_clips)]


def _onehot(labels: np.ndarray, num_objects: int) -> torch.Tensor:
    """``H×W`` label map → ``K×1×H×W`` float one-hot of objects 1..K."""
    first = torch.from_numpy(labels).long()
    return torch.stack([(first == k + 1) for k in range(num_objects)]).float().unsqueeze(1)


def propagate_clip(prop_net: torch.nn.Module, clip: Clip, precision: str = "float32",
                   device: torch.device | str = "cpu", **core_options) -> np.ndarray:
    """Labels ``T×H×W`` uint8 of ``clip`` propagated from its frame-0 ground truth (``core_options``:
    further :class:`InferenceCore` arguments, e.g. ``prob_storage``)."""
    core = InferenceCore(prop_net, None, list(clip.frames), clip.num_objects, device=device, precision=precision,
                         **core_options)
    onehot = apply_pad(_onehot(clip.labels[0], clip.num_objects), core.pad)
    with torch.inference_mode():
        for _ in propagate_first_frame(core, onehot):
            pass
        return np.stack([frame_labels(core.get_prob(t), core.pad) for t in range(core.t)])


def evaluate_propagation(prop_net: torch.nn.Module, clips: Sequence[Clip],
                         precisions: Sequence[str] = ("float32",),
                         device: torch.device | str = "cpu") -> HeldOutResult:
    """Mean J&F per precision over ``clips`` (frame 0 given, scored on frames 1..T-1) and pixel agreement
    of each precision with float32 (float32 is always run first, as the reference)."""
    order = ["float32"] + [p for p in precisions if p != "float32"]
    result = HeldOutResult()
    fp32_labels: list[np.ndarray] = []
    for precision in order:
        scores, same, total = [], 0, 0
        for i, clip in enumerate(clips):
            labels = propagate_clip(prop_net, clip, precision, device)
            s = evaluate_sequence(clip.labels[1:], labels[1:], clip.num_objects)
            scores.append(float(s.JF))
            if precision == "float32":
                fp32_labels.append(labels)
            same += int((labels[1:] == fp32_labels[i][1:]).sum())
            total += int(labels[1:].size)
        result.jf[precision] = float(np.mean(scores))
        result.per_clip[precision] = scores
        result.agreement[precision] = same / max(total, 1)
    return result


def two_round_clip(prop_net: torch.nn.Module, fuse_net: torch.nn.Module | None, clip: Clip,
                   precision: str = "float32", device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Labels ``T×H×W`` uint8 after round 1 (frame 0's ground truth, propagated to the end) and after
    round 2 (the last frame's ground truth, propagated backwards to frame 1). Round 2 is bounded by
    frame 0's interaction, so with ``fuse_net`` every frame of it is fused with round 1; without, the new
    propagation replaces round 1."""
    core = InferenceCore(prop_net, fuse_net, list(clip.frames), clip.num_objects, device=device, precision=precision)
    last = clip.num_frames - 1
    with torch.inference_mode():
        for _ in propagate_first_frame(core, apply_pad(_onehot(clip.labels[0], clip.num_objects), core.pad)):
            pass
        round1 = np.stack([frame_labels(core.get_prob(t), core.pad) for t in range(core.t)])
        core.interact(first_frame_probabilities(apply_pad(_onehot(clip.labels[last], clip.num_objects), core.pad)),
                      last)
        round2 = np.stack([frame_labels(core.get_prob(t), core.pad) for t in range(core.t)])
    return round1, round2


def evaluate_fusion(prop_net: torch.nn.Module, fuse_net: torch.nn.Module, clips: Sequence[Clip],
                    precisions: Sequence[str] = ("float32",), device: torch.device | str = "cpu") -> HeldOutResult:
    """Round-2 J&F with fusion per precision (frames 1..T-2, those both rounds reach), pixel agreement of
    each precision with float32, and float32 ``baselines``: ``round1`` (round 1 kept) and ``replace``
    (round 2 without a fusion network: the new propagation replaces round 1). A useful fusion network
    beats both."""
    order = ["float32"] + [p for p in precisions if p != "float32"]
    result = HeldOutResult()
    round1_scores, replace_scores = [], []
    for clip in clips:
        round1, replaced = two_round_clip(prop_net, None, clip, "float32", device)
        inner = slice(1, clip.num_frames - 1)
        round1_scores.append(float(evaluate_sequence(clip.labels[inner], round1[inner], clip.num_objects).JF))
        replace_scores.append(float(evaluate_sequence(clip.labels[inner], replaced[inner], clip.num_objects).JF))
    result.baselines = {"round1": float(np.mean(round1_scores)), "replace": float(np.mean(replace_scores))}
    fp32_labels: list[np.ndarray] = []
    for precision in order:
        scores, same, total = [], 0, 0
        for i, clip in enumerate(clips):
            _, fused = two_round_clip(prop_net, fuse_net, clip, precision, device)
            inner = slice(1, clip.num_frames - 1)
            scores.append(float(evaluate_sequence(clip.labels[inner], fused[inner], clip.num_objects).JF))
            if precision == "float32":
                fp32_labels.append(fused)
            same += int((fused[inner] == fp32_labels[i][inner]).sum())
            total += int(fused[inner].size)
        result.jf[precision] = float(np.mean(scores))
        result.per_clip[precision] = scores
        result.agreement[precision] = same / max(total, 1)
    return result
