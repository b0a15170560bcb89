"""The original's propagation compute path, as a network with the project's interface.

:class:`OriginalPath` wraps a :class:`model.propagation.prop_net.PropagationNetwork` and implements the
interface the inference core uses (``memorize``, ``get_query_features``, ``segment_with_features``,
``get_attention``) the way the original MiVOS computes it: the cached query features are the encoder
outputs ``(k16, v16, f16, f8, f4)`` and every segmentation runs the full decoder (skip branches
included) through ``segment_with_query``. Together with ``channels_last=False`` and f-BRS without its
folded copy this is the benchmark's ``orig`` mode: the original's arithmetic on the same machine.
"""
from __future__ import annotations

import torch
from torch import nn


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
        return self.net.segment_with_query(keys, values, f16, f8, f4, k16, v16)

    def get_attention(self, mk16: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                      qk16: torch.Tensor) -> torch.Tensor:
        return self.net.get_attention(mk16, pos_mask, neg_mask, qk16)
