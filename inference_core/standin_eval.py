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
                    precisions: Sequence[str] = ("float32",), device: torch.device | str = "cpu",
                    baselines: bool = True) -> HeldOutResult:
    """Round-2 J&F with fusion per precision (frames 1..T-2, those both rounds reach), pixel agreement of
    each precision with float32, and (``baselines``) the float32 ``baselines``: ``round1`` (round 1 kept)
    and ``replace`` (round 2 without a fusion network: the new propagation replaces round 1). A useful
    fusion network beats both."""
    order = ["float32"] + [p for p in precisions if p != "float32"]
    result = HeldOutResult()
    round1_scores, replace_scores = [], []
    for clip in clips if baselines else ():
        round1, replaced = two_round_clip(prop_net, None, clip, "float32", device)
        inner = slice(1, clip.num_frames - 1)
        round1_scores.append(float(evaluate_sequence(clip.labels[inner], round1[inner], clip.num_objects).JF))
        replace_scores.append(float(evaluate_sequence(clip.labels[inner], replaced[inner], clip.num_objects).JF))
    if baselines:
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


@dataclass
class S2MCase:
    """One scribble interaction on one object: ``image`` ``1×3×H'×W'`` normalised and padded to /16,
    ``prev``, ``pos``, ``neg``, ``gt`` ``H'×W'`` uint8 (0/255 masks, 0/1 scribbles, padded with 0), ``kind``
    ``"first"`` (empty previous mask) or ``"correct"`` (the ground truth perturbed, as S2M training does)."""

    image: torch.Tensor
    prev: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    gt: np.ndarray
    kind: str


def s2m_cases(clips: Sequence[Clip], seed: int = HELD_OUT_SEED_BASE, frame_step: int = 5,
              min_pixels: int = 100) -> list[S2MCase]:
    """Held-out S2M interactions (deterministic from ``seed``): every ``frame_step``-th frame of every clip,
    every object with at least ``min_pixels`` pixels there, once from an empty previous mask and once
    correcting the ground truth perturbed to IoU ~0.7; scribbles from :func:`dataset.scribble.get_scribble`
    (the training generator)."""
    rng = np.random.RandomState(seed)
    cases: list[S2MCase] = []
    state = np.random.get_state()  # the scribble robot's thinning draws from numpy's global generator
    np.random.seed(seed)
    try:
        _add_s2m_cases(cases, clips, rng, frame_step, min_pixels)
    finally:
        np.random.set_state(state)
    return cases


def _add_s2m_cases(cases: list, clips: Sequence[Clip], rng: np.random.RandomState, frame_step: int,
                   min_pixels: int) -> None:
    from dataset.mask_perturb import perturb_mask
    from dataset.range_transform import im_normalization
    from dataset.scribble import get_scribble
    from util.tensor_util import pad_divide_by
    for clip in clips:
        for t in range(0, clip.num_frames, frame_step):
            image = im_normalization(torch.from_numpy(clip.frames[t]).permute(2, 0, 1).float() / 255)
            image, pad = pad_divide_by(image.unsqueeze(0), 16)

            def padded(a: np.ndarray) -> np.ndarray:
                return apply_pad(torch.from_numpy(a)[None, None], pad)[0, 0].numpy()
            for k in range(1, clip.num_objects + 1):
                gt = (clip.labels[t] == k).astype(np.uint8) * 255
                if int((gt > 0).sum()) < min_pixels:
                    continue
                for kind in ("first", "correct"):
                    prev = np.zeros_like(gt) if kind == "first" else perturb_mask(gt, iou_target=0.7, rng=rng)
                    pos, neg = get_scribble(prev, gt, from_zero=kind == "first", rng=rng)
                    cases.append(S2MCase(image, padded(prev), padded(pos), padded(neg), padded(gt), kind))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def evaluate_s2m(s2m_net: torch.nn.Module, cases: Sequence[S2MCase], precisions: Sequence[str] = ("float32",),
                 device: torch.device | str = "cpu") -> HeldOutResult:
    """Mean IoU (``jf`` holds it) of the S2M mask (probability > 0.5) per precision, over all ``cases`` and
    per kind (``per_clip`` holds ``[first, correct]``), pixel agreement with float32, and the IoU of the
    previous masks as ``baselines`` (``first`` 0, ``correct`` ~0.7): a useful S2M network beats them."""
    from inference_core.interaction.s2m_controller import run_s2m
    from util.precision import autocast_dtype
    order = ["float32"] + [p for p in precisions if p != "float32"]
    result = HeldOutResult()
    kinds = ("first", "correct")
    result.baselines = {kind: float(np.mean([_iou(c.prev > 128, c.gt > 128) for c in cases if c.kind == kind]))
                        for kind in kinds}
    fp32_masks: list[np.ndarray] = []
    s2m_net = s2m_net.to(device).eval()
    for precision in order:
        dtype = autocast_dtype(precision)
        ious: dict[str, list[float]] = {kind: [] for kind in kinds}
        same = total = 0
        for i, case in enumerate(cases):
            maps = [torch.from_numpy(a).float()[None, None] for a in (case.prev / 255.0, case.pos, case.neg)]
            net_input = torch.cat([case.image, *maps], 1).to(device)
            with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype or torch.bfloat16,
                                                        enabled=dtype is not None):
                prob = run_s2m(s2m_net, net_input).float()
            mask = (prob[0, 0] > 0.5).cpu().numpy()
            ious[case.kind].append(_iou(mask, case.gt > 128))
            if precision == "float32":
                fp32_masks.append(mask)
            same += int((mask == fp32_masks[i]).sum())
            total += mask.size
        result.jf[precision] = float(np.mean(ious["first"] + ious["correct"]))
        result.per_clip[precision] = [float(np.mean(ious[kind])) for kind in kinds]
        result.agreement[precision] = same / max(total, 1)
    return result
