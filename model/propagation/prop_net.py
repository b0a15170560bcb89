"""MiVOS propagation network (STM with top-k memory read), inference form.

State-dict keys = the official ``propagation_model.pth`` (597 entries). Constructing it never
downloads weights.

The interface every propagation runner of the project uses (the inference core, the fusion-data
generator, and any stand-in network such as the benchmark's original-path wrapper or a test stub):

* ``memorize(frame, masks) -> (keys K×Ck×1×h×w, values K×Cv×1×h×w)``;
* ``get_query_features(frame) -> tuple`` of everything a query frame contributes, cached per frame;
  its **first element is the query key** ``1×Ck×h×w`` (fusion reads it);
* ``segment_with_features(keys, values, *features) -> K×1×H×W`` sigmoid probabilities;
* ``get_attention(mk16, pos_mask, neg_mask, qk16) -> K×2×H×W`` (fusion only).

The original's ``get_query_values`` / ``segment_with_query`` are kept (same numbers).
"""
from __future__ import annotations

import torch

from model.propagation.memory import AttentionMemory, EvalMemoryReader, attention_maps
from model.propagation.modules import Decoder, PropagationEncoders


def others_masks(masks: torch.Tensor) -> torch.Tensor:
    """For each object the sum of the *other* objects' masks: ``K×1×H×W`` → ``K×1×H×W``
    (zeros when K = 1). Summed in object order, like the original, so soft masks give the
    same float32 numbers."""
    k = masks.shape[0]
    if k == 1:
        return torch.zeros_like(masks)
    return torch.cat([masks[[j for j in range(k) if j != i]].sum(dim=0, keepdim=True) for i in range(k)], 0)


class PropagationNetwork(PropagationEncoders):
    """Sub-modules (in checkpoint order): ``mask_rgb_encoder``, ``rgb_encoder``, ``kv_m_f16``,
    ``kv_q_f16`` (from :class:`PropagationEncoders`), ``memory`` and ``attn_memory`` (no
    parameters), ``decoder``."""

    def __init__(self, top_k: int | None = 50):
        super().__init__()
        self.memory = EvalMemoryReader(top_k)
        self.attn_memory = AttentionMemory()
        self.decoder = Decoder()

    @property
    def top_k(self) -> int | None:
        return self.memory.top_k

    def memorize(self, frame: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one frame as memory for K objects.

        frame ``1×3×H×W``, masks ``K×1×H×W`` → (keys ``K×128×1×H/16×W/16``, values ``K×512×1×H/16×W/16``).
        """
        k, _, h, w = masks.shape
        frames = frame.view(1, 3, h, w).expand(k, -1, -1, -1)
        f16 = self.mask_rgb_encoder(frames, masks, others_masks(masks))
        k16, v16 = self.kv_m_f16(f16)
        return k16.unsqueeze(2), v16.unsqueeze(2)

    def get_query_values(self, frame: torch.Tensor):
        """frame ``1×3×H×W`` → (f16 ``1×1024×H/16×W/16``, f8 ``1×512×H/8×W/8``, f4 ``1×256×H/4×W/4``,
        k16 ``1×128×H/16×W/16``, v16 ``1×512×H/16×W/16``)."""
        f16, f8, f4 = self.rgb_encoder(frame)
        k16, v16 = self.kv_q_f16(f16)
        return f16, f8, f4, k16, v16

    def read_memory(self, keys: torch.Tensor, values: torch.Tensor, k16: torch.Tensor) -> torch.Tensor:
        """Memory readout per object: keys ``K×128×T×h×w``, values ``K×512×T×h×w`` (or a list of K
        row sources, see :class:`model.propagation.memory.RowSource`), query key ``1×128×h×w`` →
        ``K×512×h×w``. One object at a time (bounds the ``T·hw×hw`` affinity)."""
        return torch.cat([self.memory(keys[i:i + 1], values[i:i + 1], k16) for i in range(keys.shape[0])], 0)

    def decode(self, readout: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, v16: torch.Tensor) -> torch.Tensor:
        """Decoder for K objects at once: readout ``K×512×h×w`` ⊕ query value ``1×512×h×w`` →
        sigmoid probabilities ``K×1×H×W``."""
        k = readout.shape[0]
        m16 = torch.cat([readout, v16.expand(k, -1, -1, -1)], 1)
        # f8/f4 stay batch 1: the skip branches do not depend on the object, so they are computed
        # once and broadcast against the K upsampled features (as in the original)
        return torch.sigmoid(self.decoder(m16, f8, f4))

    def segment_with_query(self, keys: torch.Tensor, values: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor,
                           f4: torch.Tensor, k16: torch.Tensor, v16: torch.Tensor) -> torch.Tensor:
        """keys ``K×128×T×h×w``, values ``K×512×T×h×w`` and the query features of
        :meth:`get_query_values` → per-object sigmoid probabilities ``K×1×H×W``."""
        return self.decode(self.read_memory(keys, values, k16), f8, f4, v16)

    # -- cached-feature path used by the inference core: identical numbers, less work per round --
    def get_query_features(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything a query frame contributes that does not depend on the memory or the objects:
        frame ``1×3×H×W`` → (k16 ``1×128×h×w``, q16 ``1×1024×h×w``, s8 ``1×512×2h×2w``, s4
        ``1×256×4h×4w``), where q16 is the query value's part of the decoder's first block
        (:meth:`Decoder.query_value_part`) and s8/s4 are its skip branches. Cache these per frame and
        call :meth:`segment_with_features`; f16/f8/f4 and v16 are not needed afterwards."""
        f16, f8, f4 = self.rgb_encoder(frame)
        k16, v16 = self.kv_q_f16(f16)
        s8, s4 = self.decoder.skips(f8, f4)
        return k16, self.decoder.query_value_part(v16), s8, s4

    def segment_with_features(self, keys: torch.Tensor, values: torch.Tensor, k16: torch.Tensor, q16: torch.Tensor,
                              s8: torch.Tensor, s4: torch.Tensor) -> torch.Tensor:
        """:meth:`segment_with_query` from :meth:`get_query_features` → sigmoid ``K×1×H×W`` (the
        objects' decoders share the query value's part, computed once per frame)."""
        readout = self.read_memory(keys, values, k16)
        return torch.sigmoid(self.decoder.decode_with_query_part(readout, q16, s8, s4))

    def get_W(self, mk16: torch.Tensor, qk16: torch.Tensor) -> torch.Tensor:
        """Full-softmax affinity ``1×hw×hw`` between memory key ``1×128×1×h×w`` and query key ``1×128×h×w``."""
        return self.attn_memory(mk16, qk16)

    def get_attention(self, mk16: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor,
                      qk16: torch.Tensor) -> torch.Tensor:
        """Transport the positive / negative interaction differences ``1×1×H×W`` of the memory frame
        (key ``mk16`` ``1×128×1×h×w``) to the query frame (key ``qk16`` ``1×128×h×w``) → ``1×2×H×W``."""
        return attention_maps(self.get_W(mk16, qk16), pos_mask, neg_mask)
