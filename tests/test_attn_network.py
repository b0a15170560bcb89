"""AttentionReadNetwork (fusion training): keys, loading from a propagation checkpoint, and
agreement with PropagationNetwork.get_attention (same modules, same recipe)."""
from __future__ import annotations

import pytest
import torch

from model.attn_network import AttentionReadNetwork
from model.factory import load_attention_reader
from model.fusion_net import FusionNet
from tests.helpers_prop import keys_of
from util.checkpoint import CheckpointError


@pytest.mark.reference
def test_keys_are_the_propagation_keys_without_decoder(read_keys):
    net = AttentionReadNetwork()
    expected = [r for r in read_keys("propagation") if not r[0].startswith("decoder.")]
    assert len(expected) == 597 - 30
    assert keys_of(net) == expected
    assert sum(p.numel() for p in net.parameters()) == 28_905_920
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not net.mask_rgb_encoder.bn1.training


def test_rejects_fusion_weights(tmp_path):
    path = tmp_path / "fusion.pth"
    torch.save(FusionNet().state_dict(), path)
    with pytest.raises(CheckpointError, match="missing keys: kv_m_f16"):
        load_attention_reader(path)


def test_matches_propagation_get_attention(seeded_checkpoints, seeded_prop_net):
    arn = load_attention_reader(seeded_checkpoints["propagation_model"])
    prop = seeded_prop_net
    g = torch.Generator().manual_seed(3)
    h, w = 128, 160
    image, query = torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g)
    gt1 = torch.zeros(1, 1, h, w)
    gt1[..., 20:90, 30:100] = 1
    gt2 = torch.zeros(1, 1, h, w)
    gt2[..., 60:120, 90:150] = 1
    prop1 = torch.roll(gt1, (6, -9), (2, 3)) * 0.8
    prop2 = torch.roll(gt2, (-5, 4), (2, 3))
    with torch.inference_mode():
        attn1, attn2 = arn(image, prop1, gt1, prop2, gt2, query)
        mk, _ = prop.memorize(image, torch.cat([gt1, gt2], 0))
        qk = prop.get_query_values(query)[3]
        ref1 = prop.get_attention(mk[0:1], (gt1 - prop1).clamp(0, 1), (prop1 - gt1).clamp(0, 1), qk)
        ref2 = prop.get_attention(mk[1:2], (gt2 - prop2).clamp(0, 1), (prop2 - gt2).clamp(0, 1), qk)
    assert attn1.shape == attn2.shape == (1, 2, h, w)
    assert attn1.abs().max() > 0 and attn2.abs().max() > 0
    # float32 rounding only (the two modules reach the same sums in another order; measured 9e-6 on values
    # up to ~0.3); a different recipe (masks, softmax, pooling) differs by far more than this
    assert (attn1 - ref1).abs().max() <= 5e-5 and (attn2 - ref2).abs().max() <= 5e-5
