"""Held-out quality of propagation weights on generated multi-object clips (J&F and precision agreement).

Trained weights are judged where formula weights cannot be: does the network follow the objects of clips it
never saw? Each held-out clip comes from :func:`dataset.synthetic.make_clip` with a seed outside the training
seeds; frame 0's ground truth is given, the rest is propagated by :class:`InferenceCore` (no fusion, exactly
the semi-supervised path of :mod:`inference_core.semisup`) and scored with :mod:`util.metrics` (all frames
but the given first one).

:func:`evaluate_propagation` returns per-precision mean J&F and, for every reduced precision, the fraction of
pixels whose label equals the float32 run's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dataset.synthetic import Clip, make_clip
from inference_core.core import InferenceCore
from inference_core.semisup import frame_labels, propagate_first_frame
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

    def as_dict(self) -> dict:
        return {"jf": self.jf, "agreement": self.agreement, "per_clip": self.per_clip}


def held_out_clips(num_clips: int = 4, num_frames: int = 16, size: tuple[int, int] = (160, 128),
                   num_objects: Sequence[int] = (2, 3), seed: int = HELD_OUT_SEED_BASE) -> list[Clip]:
    """``num_clips`` generated clips (``size`` = (W, H)); objects per clip cycle through ``num_objects``."""
    return [make_clip(num_frames, size[0], size[1], int(num_objects[i % len(num_objects)]), seed=seed + i)
            for i in range(num_clips)]


def propagate_clip(prop_net: torch.nn.Module, clip: Clip, precision: str = "float32",
                   device: torch.device | str = "cpu", **core_options) -> np.ndarray:
    """Labels ``T×H×W`` uint8 of ``clip`` propagated from its frame-0 ground truth (``core_options``:
    further :class:`InferenceCore` arguments, e.g. ``prob_storage``)."""
    core = InferenceCore(prop_net, None, list(clip.frames), clip.num_objects, device=device, precision=precision,
                         **core_options)
    first = torch.from_numpy(clip.labels[0]).long()
    onehot = torch.stack([(first == k + 1) for k in range(clip.num_objects)]).float().unsqueeze(1)
    onehot = apply_pad(onehot, core.pad)
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
