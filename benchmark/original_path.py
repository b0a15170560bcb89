"""The original's propagation compute path, as a network with the project's interface.

:class:`OriginalPath` wraps a :class:`model.propagation.prop_net.PropagationNetwork` and implements the
interface the inference core uses (``memorize``, ``get_query_features``, ``segment_with_features``,
``get_attention``) the way the original MiVOS computes it: the cached query features are the encoder
outputs ``(k16, v16, f16, f8, f4)``, memory is read through the dense top-k product and every
segmentation runs the full decoder (skip branches included). Together with ``channels_last=False``
and f-BRS without its folded copy this is the benchmark's ``orig`` mode: the original's arithmetic on
the same machine.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.propagation.memory import readout, scaled_affinity, top_k_softmax_
from util.tensor_util import unpad


class OriginalPath(nn.Module):
    """``net``: a PropagationNetwork. Same numbers as ``net`` itself (the decoder's skip branches are
    the same convolutions, recomputed for every object and round)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def memorize(self, frame: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.memorize(frame, masks)

    def get_query_features(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frame ``1×3×H×W`` → (k16, v16, f16, f8, f4): what the original keeps per query frame, the
        query key first."""
        f16, f8, f4, k16, v16 = self.net.get_query_values(frame)
        return k16, v16, f16, f8, f4

    def segment_with_features(self, keys: torch.Tensor, values: torch.Tensor, k16: torch.Tensor,
                              v16: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor,
                              f4: torch.Tensor) -> torch.Tensor:
        """Memory read + full decoder → sigmoid probabilities ``K×1×H×W``."""
        top_k = self.net.top_k
        if top_k is None or not isinstance(values, torch.Tensor):
            return self.net.segment_with_query(keys, values, f16, f8, f4, k16, v16)
        return self.net.decode(self.read_memory(keys, values, k16, top_k), f8, f4, v16)

    @staticmethod
    def read_memory(keys: torch.Tensor, values: torch.Tensor, k16: torch.Tensor, top_k: int) -> torch.Tensor:
        """The original's top-k read, one object at a time: the whole ``T·h·w × h·w`` affinity, top-k
        along its memory axis, the softmax weights scattered back into it (zeros elsewhere) and one
        dense product with the values. keys ``K×CK×T×h×w``, values ``K×CV×T×h×w``, k16 ``1×CK×h×w``
        → ``K×CV×h×w``."""
        k, ck, _, h, w = keys.shape
        cv = values.shape[1]
        out = []
        for i in range(k):
            affinity = top_k_softmax_(scaled_affinity(keys[i:i + 1].reshape(1, ck, -1), k16.reshape(1, ck, -1)),
                                      top_k)
            out.append(readout(values[i:i + 1].reshape(1, cv, -1).contiguous(), affinity).view(1, cv, h, w))
        return torch.cat(out, 0)

    def get_attention(self, mk16: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                      qk16: torch.Tensor) -> torch.Tensor:
        return self.net.get_attention(mk16, pos_mask, neg_mask, qk16)


def original_s2m(s2m_net: nn.Module, image: torch.Tensor, prev_mask: torch.Tensor, scribbles: np.ndarray,
                 num_objects: int, no_scribble: int = 255) -> torch.Tensor:
    """The original GUI's S2M step: the network (BatchNorm unfolded) once per object, on the same inputs
    as :class:`inference_core.interaction.s2m_controller.S2MController` → ``K×1×H'×W'`` probabilities."""
    from inference_core.interaction.s2m_controller import build_s2m_input
    net_input = build_s2m_input(image, prev_mask, scribbles, num_objects, no_scribble)
    return torch.cat([torch.sigmoid(s2m_net(net_input[i:i + 1])) for i in range(num_objects)], 0)


def label_every_frame(core) -> np.ndarray:
    """The original's last step of an interaction: the hard mask of every frame of the video, whether
    the pass changed it or not, by ``torch.argmax`` over the channels, un-padded → ``T×H×W`` uint8.

    ``core``: an :class:`inference_core.InferenceCore`. The core itself relabels only the frames a
    pass changed, with :func:`model.aggregate.hard_labels`; the labels are the same.
    """
    labels = torch.stack([torch.argmax(core.get_prob(t), dim=0) for t in range(core.t)])   # T×1×H'×W'
    return unpad(labels, core.pad)[:, 0].to("cpu", torch.uint8).numpy()
