"""Frozen attention reader used by fusion training (the original's ``AttentionReadNetwork``).

It is the encoder half of the propagation network (same module classes, same keys) and loads
from ``propagation_model.pth`` with the 30 ``decoder.*`` keys ignored; see
:func:`model.factory.load_attention_reader`.
"""
from __future__ import annotations

import torch

from model.propagation.memory import AttentionMemory, attention_maps
from model.propagation.modules import PropagationEncoders


class AttentionReadNetwork(PropagationEncoders):
    """Transport the interaction differences of a reference frame to a target frame, for two objects.

    ``forward(image, prop1, gt1, prop2, gt2, query_image)``: ``image``/``query_image`` ``B×3×H×W``
    (reference and target frames), ``prop*`` the propagated and ``gt*`` the ground-truth masks of
    objects 1 and 2 on the reference frame (``B×1×H×W``). Returns ``(attn1, attn2)``, each ``B×2×H×W``
    (channel 0 = positive difference ``clamp(gt − prop)``, 1 = negative ``clamp(prop − gt)``).
    All parameters are frozen.
    """

    def __init__(self):
        super().__init__()
        self.memory = AttentionMemory()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "AttentionReadNetwork":
        # always frozen: batch-norm statistics must never update during fusion training
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, prop1: torch.Tensor, gt1: torch.Tensor, prop2: torch.Tensor,
                gt2: torch.Tensor, query_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # memory keys of the reference frame: object mask = ground truth, "others" = the other object
        mk1 = self.encode_memory_key(image, gt1, gt2)
        mk2 = self.encode_memory_key(image, gt2, gt1)
        qk = self.encode_query_key(query_image)
        w1 = self.memory(mk1, qk)
        w2 = self.memory(mk2, qk)
        attn1 = attention_maps(w1, (gt1 - prop1).clamp(0, 1), (prop1 - gt1).clamp(0, 1))
        attn2 = attention_maps(w2, (gt2 - prop2).clamp(0, 1), (prop2 - gt2).clamp(0, 1))
        return attn1, attn2
