"""The propagation network as trained (Mask-Propagation ``model/network.py``), built from the same modules
as the inference :class:`~model.propagation.prop_net.PropagationNetwork`.

Differences from inference: the memory read is a plain softmax over every memory
position (``EvalMemoryReader(top_k=None)``), samples are batched (B samples, one query each), and
stage 0 trains a single-object variant whose mask encoder takes RGB + mask (4 input channels, no
"others" mask). State-dict keys are those of ``propagation_model.pth`` in both variants, so a
trained multi-object network loads strictly into the inference network.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from model.aggregate import aggregate_wbg_channel
from model.propagation.modules import MaskRGBEncoder
from model.propagation.prop_net import PropagationNetwork

MASK_CONV_KEY = "mask_rgb_encoder.conv1.weight"


class PropagationTrainingNetwork(PropagationNetwork):
    """``single_object=True``: stage 0 (mask encoder conv1 4→64); else two objects per sample (5→64)."""

    def __init__(self, single_object: bool):
        super().__init__(top_k=None)  # plain softmax memory read while training
        self.single_object = single_object
        if single_object:
            # replacing the attribute keeps its position, so the key order is unchanged
            self.mask_rgb_encoder = MaskRGBEncoder(extra_channels=1)

    @torch.no_grad()
    def init_encoders_from_imagenet(self, resnet50: Mapping[str, torch.Tensor],
                                    generator: torch.Generator | None = None) -> None:
        """Start both encoders from an ImageNet ResNet-50 (torchvision layout, e.g.
        :func:`model.factory.load_imagenet_resnet50`), as the original's networks do when built.

        The query encoder takes ``conv1``, ``bn1`` and ``layer1..3`` (``layer1`` is named ``res2``). The mask
        encoder takes the same layers; its first convolution's extra mask channels (1 or 2) get an
        orthogonal initialisation and its convolution biases (absent in torchvision) stay zero, as in the
        original's network surgery. Every needed key must be present with its shape (one-line error naming
        the first mismatches); the key-value projections and the decoder keep their initialisation.
        """
        from util.checkpoint import CheckpointError
        problems = []
        for prefix, module in (("rgb_encoder", self.rgb_encoder), ("mask_rgb_encoder", self.mask_rgb_encoder)):
            own = module.state_dict()
            for name, target in own.items():
                key = "layer1" + name[len("res2"):] if name.startswith("res2.") else name
                if key not in resnet50:
                    weight = own.get(name[:-len("bias")] + "weight")
                    if name.endswith(".bias") and weight is not None and weight.dim() == 4:
                        continue  # a convolution bias torchvision's ResNet has not: stays zero
                    problems.append(f"missing {key}")
                    continue
                source = resnet50[key]
                if prefix == "mask_rgb_encoder" and key == "conv1.weight":
                    if source.shape[1] != 3 or target.shape[:1] + target.shape[2:] != source.shape[:1] + source.shape[2:]:
                        problems.append(f"{key} has shape {tuple(source.shape)}")
                        continue
                    extra = torch.empty((target.shape[0], target.shape[1] - 3, *target.shape[2:]))
                    nn.init.orthogonal_(extra, generator=generator)
                    target.copy_(torch.cat([source, extra], 1))
                elif source.shape != target.shape:
                    problems.append(f"{key} has shape {tuple(source.shape)}, expected {tuple(target.shape)}")
                else:
                    target.copy_(source)
        if problems:
            raise CheckpointError(f"not an ImageNet ResNet-50 state dict: {', '.join(problems[:4])}"
                                  f"{' …' if len(problems) > 4 else ''}")

    def forward(self, mode: str, *args, **kwargs):
        """``forward("memorize", ...)`` = :meth:`memorize_batch`, ``forward("segment", ...)`` =
        :meth:`segment_batch`: both go through ``forward`` so that DistributedDataParallel sees every call."""
        if mode == "memorize":
            return self.memorize_batch(*args, **kwargs)
        if mode == "segment":
            return self.segment_batch(*args, **kwargs)
        raise ValueError(f"PropagationTrainingNetwork: unknown mode {mode!r} (memorize or segment)")

    def memorize_batch(self, frames: torch.Tensor, masks: torch.Tensor,
                       others: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames ``B×3×H×W``, masks (and others, two-object mode) ``B×1×H×W`` →
        (keys ``B×128×1×h×w``, values ``B×512×1×h×w``)."""
        f16 = self.mask_rgb_encoder(frames, masks, None if self.single_object else others)
        k16, v16 = self.kv_m_f16(f16)
        return k16.unsqueeze(2), v16.unsqueeze(2)

    def segment_batch(self, frames: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      selector: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment query ``frames`` ``B×3×H×W`` from a memory.

        Single object: keys ``B×128×T×h×w``, values ``B×512×T×h×w``. Two objects: keys
        ``B×2×128×T×h×w``, values ``B×2×512×T×h×w`` and ``selector`` ``B×2`` (0 zeroes an absent
        second object). Returns (logits ``B×(K+1)×H×W`` with background first, probabilities
        ``B×K×H×W`` without background), K = 1 or 2.
        """
        f16, f8, f4 = self.rgb_encoder(frames)
        k16, v16 = self.kv_q_f16(f16)
        if self.single_object:
            keys, values = keys.unsqueeze(1), values.unsqueeze(1)
        logits = []
        for obj in range(keys.shape[1]):
            readout = self.memory(keys[:, obj], values[:, obj], k16)
            logits.append(self.decoder(torch.cat([readout, v16], 1), f8, f4))
        prob = torch.sigmoid(torch.cat(logits, 1))
        if selector is not None and not self.single_object:
            prob = prob * selector[:, :, None, None]
        return aggregate_wbg_channel(prob)


def single_to_multi_object(state: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict:
    """Stage 0 → 1/2 weight conversion: a 4-channel ``mask_rgb_encoder.conv1.weight`` (64×4×7×7) gets a 5th
    input channel (64×1×7×7, orthogonally initialised) for the "others" mask. Other states pass unchanged."""
    weight = state.get(MASK_CONV_KEY)
    if weight is None or weight.shape[1] != 4:
        return state
    extra = torch.empty(weight.shape[0], 1, *weight.shape[2:], dtype=weight.dtype)
    nn.init.orthogonal_(extra, generator=generator)
    return {**state, MASK_CONV_KEY: torch.cat([weight, extra], 1)}
