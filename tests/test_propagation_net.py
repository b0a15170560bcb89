"""PropagationNetwork: shapes and memory-read invariants (seeded weights); checkpoint keys and equivalence
with the original (formula weights, marked ``reference``)."""
from __future__ import annotations

import pytest
import torch

from model.factory import load_propagation
from model.propagation.memory import EvalMemoryReader, top_k_softmax_
from model.propagation.prop_net import PropagationNetwork, others_masks
from tests.helpers_prop import keys_of, max_abs_diff, propagation_net

TOL = 1e-4


@pytest.fixture(scope="module")
def formula_net(formula, tmp_path_factory):
    return propagation_net(formula, tmp_path_factory)


@pytest.fixture(scope="module")
def outputs(formula_net, load_fixture):
    """Every call of the fixture recipe, run once (formula weights, as the original's outputs)."""
    prop_net = formula_net
    z = load_fixture("propagation")
    t = lambda n: torch.from_numpy(z[n])  # noqa: E731
    frames = t("frames_norm")
    with torch.inference_mode():
        out = {}
        out["mem0_k16"], out["mem0_v16"] = prop_net.memorize(frames[0:1], t("mem0_masks"))
        out["mem1_k16"], out["mem1_v16"] = prop_net.memorize(frames[1:2], t("mem1_masks"))
        f16, f8, f4, k16, v16 = prop_net.get_query_values(frames[2:3])
        out.update(q_f16_fp16=f16, q_f8_fp16=f8, q_f4_fp16=f4, q_k16=k16, q_v16=v16)
        keys = torch.cat([out["mem0_k16"], out["mem1_k16"]], 2)
        values = torch.cat([out["mem0_v16"], out["mem1_v16"]], 2)
        out["seg_out"] = prop_net.segment_with_query(keys, values, f16, f8, f4, k16, v16)
        out["attn_out"] = prop_net.get_attention(out["mem0_k16"][0:1], t("attn_pos_mask"), t("attn_neg_mask"), k16)
    return out


@pytest.mark.reference
def test_state_dict_matches_official_keys(read_keys):
    assert keys_of(PropagationNetwork()) == read_keys("propagation")


def test_construction_downloads_nothing(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("PropagationNetwork() tried to download weights")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    net = PropagationNetwork(top_k=20)
    assert net.memory.top_k == 20


@pytest.mark.reference
@pytest.mark.parametrize("name", ["mem0_k16", "mem0_v16", "mem1_k16", "mem1_v16", "q_k16", "q_v16",
                                  "seg_out", "attn_out"])
def test_matches_original(outputs, load_fixture, name, record_property):
    d = max_abs_diff(f"propagation.{name}", outputs[name], load_fixture("propagation")[name])
    record_property(name, d)
    assert d <= TOL


@pytest.mark.reference
@pytest.mark.parametrize("name", ["q_f16_fp16", "q_f8_fp16", "q_f4_fp16"])
def test_query_features_match_fp16_copies(outputs, load_fixture, name, record_property):
    ref = load_fixture("propagation")[name]
    ours = outputs[name]
    d = max_abs_diff(f"propagation.{name}", ours, ref.astype("float32"))
    record_property(name, d)
    # the reference is rounded to float16: half an ulp of the largest magnitude, plus float32 noise
    assert d <= ours.abs().max().item() * 2.0 ** -11 + TOL


def test_module_prefixed_checkpoint_loads_identically(seeded_prop_net, seeded_checkpoints, tmp_path):
    path = tmp_path / "ddp.pth"
    plain = torch.load(seeded_checkpoints["propagation_model"], weights_only=True)
    torch.save({"module." + k: v for k, v in plain.items()}, path)
    other = load_propagation(path, "cpu")
    ref = seeded_prop_net.state_dict()
    got = other.state_dict()
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_others_masks():
    masks = torch.rand(3, 1, 8, 8)
    others = others_masks(masks)
    assert torch.allclose(others[0], masks[1] + masks[2])
    assert torch.allclose(others[2], masks[0] + masks[1])
    assert torch.equal(others_masks(masks[:1]), torch.zeros_like(masks[:1]))


@torch.inference_mode()
def test_shapes_single_object(seeded_prop_net):
    prop_net = seeded_prop_net
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 3, 128, 128, generator=g)
    k16, v16 = prop_net.memorize(frame, torch.ones(1, 1, 128, 128))
    assert k16.shape == (1, 128, 1, 8, 8) and v16.shape == (1, 512, 1, 8, 8)
    f16, f8, f4, qk, qv = prop_net.get_query_values(frame)
    assert f16.shape == (1, 1024, 8, 8) and f8.shape == (1, 512, 16, 16) and f4.shape == (1, 256, 32, 32)
    assert qk.shape == (1, 128, 8, 8) and qv.shape == (1, 512, 8, 8)
    prob = prop_net.segment_with_query(k16, v16, f16, f8, f4, qk, qv)
    assert prob.shape == (1, 1, 128, 128) and 0 <= prob.min() <= prob.max() <= 1
    attn = prop_net.get_attention(k16, torch.ones(1, 1, 128, 128), torch.zeros(1, 1, 128, 128), qk)
    assert attn.shape == (1, 2, 128, 128)
    # a uniform positive map carried by a column-stochastic affinity stays 1, the negative stays 0
    assert torch.allclose(attn[:, 0], torch.ones(1, 128, 128), atol=1e-5) and attn[:, 1].abs().max() == 0


def test_top_k_softmax_is_a_softmax_over_the_k_largest():
    g = torch.Generator().manual_seed(1)
    aff = torch.randn(1, 80, 30, generator=g) * 3
    out = top_k_softmax_(aff.clone(), 10)
    kth = aff.topk(10, dim=1).values[:, -1:]
    expected = torch.where(aff >= kth, aff, torch.tensor(float("-inf"))).softmax(dim=1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(1, 30)) and ((out > 0).sum(1) == 10).all()


def test_memory_reader_without_top_k_is_plain_softmax():
    g = torch.Generator().manual_seed(2)
    mk, mv, qk = torch.randn(1, 16, 2, 3, 4, generator=g), torch.randn(1, 8, 2, 3, 4, generator=g), \
        torch.randn(1, 16, 3, 4, generator=g)
    out = EvalMemoryReader(top_k=None)(mk, mv, qk)
    w = (mk.reshape(16, 24).T @ qk.reshape(16, 12) / 4.0).softmax(dim=0)
    assert torch.allclose(out.reshape(8, 12), mv.reshape(8, 24) @ w, atol=1e-5)


@torch.inference_mode()
def test_top_k_needs_enough_memory_positions(seeded_prop_net):
    prop_net = seeded_prop_net
    frame = torch.randn(1, 3, 32, 32)  # 2x2 = 4 memory cells < 50
    k16, v16 = prop_net.memorize(frame, torch.ones(1, 1, 32, 32))
    f16, f8, f4, qk, qv = prop_net.get_query_values(frame)
    with pytest.raises(ValueError, match="at least 50 memory positions"):
        prop_net.segment_with_query(k16, v16, f16, f8, f4, qk, qv)
