"""Propagation **without fusion** from a single annotated frame: the data source of fusion training.

``generate_fusion.py`` simulates what the interactive loop's propagation produces before fusion: the
ground truth of a reference frame ``idx`` is propagated forward to ``right`` and backward to ``left``
with the propagation network alone. Memory = the reference frame, plus every frame at least
``mem_freq`` frames after the last committed one (committed), plus the previous frame (temporary,
replaced each step), i.e. :class:`inference_core.memory_bank.PassMemory` with the reference frame as
its base; probabilities are combined per frame with :func:`model.aggregate.aggregate_wbg`.
This is the original ``generation/fusion_generator.py`` pass. It is kept separate from
``inference_core.InferenceCore`` (which fuses and keeps a feature cache) because it never fuses and
streams its results frame by frame, so memory use does not grow with the video length.

Only the propagation network interface of the inference core is used: ``memorize``,
``get_query_features``, ``segment_with_features``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from inference_core.memory_bank import PassMemory
from model.aggregate import aggregate_wbg
from model.batchnorm_fold import inference_network
from util.tensor_util import pad_divide_by, unpad


class FusionGenerator:
    """Propagate one-hot masks through a video without fusion.

    ``images``: normalised frames ``T×3×H×W`` (or ``1×T×3×H×W``) on the network's device. They are
    padded to multiples of 16 once; results are returned unpadded.
    """

    def __init__(self, prop_net: nn.Module, images: torch.Tensor, mem_freq: int):
        if mem_freq < 1:
            raise ValueError(f"mem_freq={mem_freq}: must be >= 1")
        if images.dim() == 5:
            images = images[0]
        self.prop_net = inference_network(prop_net)   # BatchNorm-folded encoders when it offers them
        self.mem_freq = mem_freq
        self.num_frames = images.shape[0]
        self.images, self.pad = pad_divide_by(images, 16)

    def _frame(self, ti: int) -> torch.Tensor:
        return self.images[ti:ti + 1]

    @torch.no_grad()
    def propagate(self, masks: torch.Tensor, idx: int, left: int, right: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(frame index, probabilities (K+1)×H×W)`` (background first, unpadded) for the reference
        frame ``idx`` (the aggregated ground truth itself), then frames ``idx+1 … right`` and then
        ``idx-1 … left``.

        ``masks``: the reference frame's one-hot masks ``K×1×H×W`` (or ``K×H×W``), values in [0, 1].
        """
        if not (0 <= left <= idx <= right < self.num_frames):
            raise ValueError(f"need 0 <= left ({left}) <= idx ({idx}) <= right ({right}) < {self.num_frames}")
        if masks.dim() == 3:
            masks = masks.unsqueeze(1)
        masks, _ = pad_divide_by(masks.to(self.images.device, torch.float32), 16)
        ref_prob = aggregate_wbg(masks, keep_bg=True)
        yield idx, unpad(ref_prob[:, 0], self.pad)
        keys, values = self.prop_net.memorize(self._frame(idx), ref_prob[1:])
        yield from self._pass(keys, values, idx, right, +1)
        yield from self._pass(keys, values, idx, left, -1)

    def _pass(self, keys: torch.Tensor, values: torch.Tensor, idx: int, end: int,
              step: int) -> Iterator[tuple[int, torch.Tensor]]:
        frames = range(idx + step, end + step, step)
        if len(frames) == 0:
            return
        memory = PassMemory(keys, values, [idx], idx, frames, self.mem_freq)
        for ti in frames:
            query = self.prop_net.get_query_features(self._frame(ti))
            prob = aggregate_wbg(self.prop_net.segment_with_features(*memory.readout(), *query), keep_bg=True)
            yield ti, unpad(prob[:, 0], self.pad)
            if memory.wants(ti):
                memory.add(ti, *self.prop_net.memorize(self._frame(ti), prob[1:]))
