"""Batched fusion (all objects in one FusionNet call) equals the original per-object loop."""
import numpy as np
import pytest
import torch

from inference_core import InferenceCore
from inference_core.core import fuse_frame
from model.aggregate import aggregate_wbg
from model.fusion_net import FusionNet
from model.propagation.prop_net import PropagationNetwork

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def formula_nets(formula):
    prop, fuse = PropagationNetwork().eval(), FusionNet().eval()
    prop.load_state_dict(formula.formula_state_dict(prop.state_dict()))
    fuse.load_state_dict(formula.formula_state_dict(fuse.state_dict()))
    return prop, fuse


def test_batched_fusion_equals_per_object_loop(formula_nets):
    prop, fuse = formula_nets
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (6, 64, 96, 3), dtype=np.uint8)
    core = InferenceCore(prop, fuse, frames, 2, device="cpu")
    with torch.inference_mode():
        pos = torch.from_numpy(rng.random((3, 1, 64, 96), dtype=np.float32))
        neg = torch.from_numpy(rng.random((3, 1, 64, 96), dtype=np.float32))
        prev = aggregate_wbg(torch.from_numpy(rng.random((2, 1, 64, 96), dtype=np.float32)), keep_bg=True)
        curr = aggregate_wbg(torch.from_numpy(rng.random((2, 1, 64, 96), dtype=np.float32)), keep_bg=True)
        mk16, _ = prop.memorize(core.get_image(1), curr[1:])
        qk16 = prop.get_query_values(core.get_image(3))[3]
        ours = fuse_frame(prop, fuse, core.get_image(3), 1, 5, 3, prev, curr, mk16, qk16, pos, neg)
        # the original: one object at a time
        dist = torch.tensor([[2 / 4, 2 / 4]])
        w = torch.zeros(2, 1, 64, 96)
        for k in (1, 2):
            attn = prop.get_attention(mk16[k - 1:k], pos[k:k + 1], neg[k:k + 1], qk16)
            w[k - 1] = torch.sigmoid(fuse(core.get_image(3), prev[k:k + 1], curr[k:k + 1], attn, dist))[0]
        ref = aggregate_wbg(w, keep_bg=True)
    assert (ours - ref).abs().max().item() < 1e-5
