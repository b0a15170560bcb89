"""Dense correspondence between two frames from the propagation network's keys
(the original ``CorrespondenceNetwork`` of Mask-Propagation's ``try_correspondence.py``).

The memory key of the source frame (memory encoder fed with the image and empty masks: the mask is
not needed for correspondence) and the query key of the target frame give the affinity
``W = softmax_over_source(mkᵀ qk / sqrt(128))`` at 1/16 resolution; any source map can then be
carried to the target with ``map · W``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.propagation.memory import AttentionMemory, readout
from model.propagation.modules import PropagationEncoders
from util.tensor_util import pad_divide_by, unpad

STRIDE = 16


class CorrespondenceNetwork(PropagationEncoders):
    """Propagation encoders without decoder; loads ``propagation_model.pth`` with ``decoder.*`` ignored."""

    def __init__(self):
        super().__init__()
        self.attn_memory = AttentionMemory()

    def get_mem_key(self, frame: torch.Tensor, mask: torch.Tensor | None = None,
                    others: torch.Tensor | None = None) -> torch.Tensor:
        """``frame B×3×H×W`` (H, W multiples of 16), optional masks ``B×1×H×W`` (default: empty)
        → memory key ``B×128×H/16×W/16``."""
        empty = frame.new_zeros(frame.shape[0], 1, *frame.shape[-2:])
        return self.encode_memory_key(frame, empty if mask is None else mask, empty if others is None else others)

    def get_query_key(self, frame: torch.Tensor) -> torch.Tensor:
        """``frame B×3×H×W`` → query key ``B×128×H/16×W/16``."""
        return self.encode_query_key(frame)

    def get_W(self, mk16: torch.Tensor, qk16: torch.Tensor) -> torch.Tensor:
        """Affinity ``B×Ns×Nt`` between source key ``B×128×hs×ws`` and target key ``B×128×ht×wt``;
        each column (a target cell) is a distribution over the source cells."""
        return self.attn_memory(mk16, qk16)

    @staticmethod
    def transfer(W: torch.Tensor, feat: torch.Tensor, target_hw: tuple[int, int]) -> torch.Tensor:
        """Carry ``feat B×C×hs×ws`` (source, 1/16) to the target: ``B×C×ht×wt`` with ``target_hw = (ht, wt)``."""
        b, c = feat.shape[:2]
        return readout(feat.reshape(b, c, -1), W).view(b, c, *target_hw)


class Correspondence:
    """Both-direction affinities between two normalised images of any size, and per-point heat maps.

    ``src``/``tar``: ``1×3×H×W`` normalised frames (sizes may differ). Points are pixel
    coordinates ``(x, y)`` of the unpadded image. Heat maps are ``H×W`` float tensors of the other
    image scaled to a maximum of 1.
    """

    def __init__(self, net: CorrespondenceNetwork, src: torch.Tensor, tar: torch.Tensor):
        self.net = net
        src_p, self.src_pad = pad_divide_by(src, STRIDE)
        tar_p, self.tar_pad = pad_divide_by(tar, STRIDE)
        self.src_hw16 = (src_p.shape[-2] // STRIDE, src_p.shape[-1] // STRIDE)
        self.tar_hw16 = (tar_p.shape[-2] // STRIDE, tar_p.shape[-1] // STRIDE)
        with torch.inference_mode():
            # forward: source memory → target query; reverse: target memory → source query
            self.W_forward = net.get_W(net.get_mem_key(src_p), net.get_query_key(tar_p))
            self.W_reverse = net.get_W(net.get_mem_key(tar_p), net.get_query_key(src_p))

    def _point_map(self, x: int, y: int, pad, hw16) -> torch.Tensor:
        lw, _, lh, _ = pad
        row, col = (y + lh) // STRIDE, (x + lw) // STRIDE
        if not (0 <= row < hw16[0] and 0 <= col < hw16[1]):
            raise ValueError(f"point ({x}, {y}) lies outside the image")
        m = torch.zeros(1, 1, *hw16, device=self.W_forward.device)
        m[0, 0, row, col] = 1
        return m

    def _heat(self, W: torch.Tensor, point_map: torch.Tensor, hw16, pad) -> torch.Tensor:
        with torch.inference_mode():
            t = self.net.transfer(W, point_map, hw16)
            t = F.interpolate(t, scale_factor=STRIDE, mode="bilinear", align_corners=False)
            t = unpad(t, pad)[0, 0]
            return t / (t.max() + 1e-6)

    def source_to_target(self, x: int, y: int) -> torch.Tensor:
        """Heat map on the target (``Ht×Wt``) of the source pixel ``(x, y)``."""
        return self._heat(self.W_forward, self._point_map(x, y, self.src_pad, self.src_hw16), self.tar_hw16,
                          self.tar_pad)

    def target_to_source(self, x: int, y: int) -> torch.Tensor:
        """Heat map on the source (``Hs×Ws``) of the target pixel ``(x, y)``."""
        return self._heat(self.W_reverse, self._point_map(x, y, self.tar_pad, self.tar_hw16), self.src_hw16,
                          self.src_pad)
