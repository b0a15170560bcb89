"""Memory schedule and bookkeeping of the inference core, with a tiny stand-in network.

The stand-in implements the PropagationNetwork / FusionNet interface with cheap deterministic maths
so the schedule (which frames each query reads, which passes fuse) is checked in milliseconds.
"""
import numpy as np
import pytest
import torch

from inference_core import InferenceCore


class StubProp(torch.nn.Module):
    def memorize(self, frame, masks):
        k = masks.shape[0]
        h, w = frame.shape[-2] // 16, frame.shape[-1] // 16
        key = torch.nn.functional.avg_pool2d(masks, 16).view(k, 1, 1, h, w).expand(k, 2, 1, h, w).contiguous()
        return key, key.clone()

    def get_query_features(self, frame):
        h, w = frame.shape[-2] // 16, frame.shape[-1] // 16
        z = torch.zeros(1, 2, h, w)
        return z, z, z, z, z

    def segment_with_features(self, keys, values, k16, *features):
        # mean of the memory values, upsampled: a plausible probability per object
        m = values.mean(dim=(1, 2))  # K×h×w
        return torch.nn.functional.interpolate(m.unsqueeze(1), scale_factor=16).clamp(0.05, 0.95)

    def get_attention(self, mk16, pos_mask, neg_mask, qk16):
        return torch.cat([pos_mask, neg_mask], 1)


class StubFusion(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, im, seg1, seg2, attn, time):
        self.calls.append(tuple(float(x) for x in time[0]))
        return torch.logit((seg1 + seg2).clamp(0.01, 1.98) / 2)


def make_core(t=14, k=1, h=32, w=48, mem_freq=5, **kwargs):
    frames = np.random.default_rng(0).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    fusion = StubFusion()
    core = InferenceCore(StubProp(), fusion, frames, k, mem_freq=mem_freq, device="cpu", **kwargs)
    trace = []
    core.memory_trace = lambda ti, mem: trace.append((ti, list(mem)))
    return core, fusion, trace


def onehot(k, h, w, label=1, region=(slice(8, 24), slice(8, 24))):
    m = torch.zeros(k + 1, 1, h, w)
    m[label, :, region[0], region[1]] = 1
    m[0] = 1 - m[1:].sum(0)
    return m


def test_memory_schedule_matches_original_trace():
    core, fusion, trace = make_core()
    core.interact(onehot(1, 32, 48), 6)
    fwd = [(ti, mem) for ti, mem in trace if ti > 6]
    bwd = [(ti, mem) for ti, mem in trace if ti < 6]
    assert [ti for ti, _ in fwd] == list(range(7, 14))
    assert [len(m) for _, m in fwd] == [1, 2, 2, 2, 2, 2, 3]
    # interacted frame, then the previous frame as a temporary slot; frame 11 committed (11-6 ≥ 5)
    assert fwd[1][1] == [6, 7] and fwd[5][1] == [6, 11] and fwd[6][1] == [6, 11, 12]
    assert [ti for ti, _ in bwd] == [5, 4, 3, 2, 1, 0]
    assert [len(m) for _, m in bwd] == [1, 2, 2, 2, 2, 2]
    assert fusion.calls == []  # nothing bounds the first interaction

    trace.clear()
    core.interact(onehot(1, 32, 48), 12)
    assert [ti for ti, _ in trace] == [13, 11, 10, 9, 8, 7]
    # certain memory = both interactions, in call order
    assert trace[0][1] == [6, 12]
    # backward pass 11..7 is bounded by frame 6: fused with tc=6, tr=12
    assert len(fusion.calls) == 5
    assert fusion.calls[0] == pytest.approx((5 / 6, 1 / 6))

    trace.clear()
    fusion.calls.clear()
    core.interact(onehot(1, 32, 48), 2)
    assert [ti for ti, _ in trace] == [3, 4, 5, 1, 0]
    assert len(fusion.calls) == 3 and fusion.calls[0] == pytest.approx((3 / 4, 1 / 4))


def test_interact_returns_masks_and_progress_callbacks():
    core, _, _ = make_core(t=6)
    totals, steps = [], []
    out = core.interact(onehot(1, 32, 48), 2, total_cb=totals.append, step_cb=lambda: steps.append(1))
    assert out.shape == (6, 32, 48) and out.dtype == np.uint8
    assert totals == [5] and len(steps) == 5
    assert (out[2] == onehot(1, 32, 48).argmax(0)[0].numpy()).all()


def test_update_mask_only_is_in_place_and_undone_by_next_interact():
    core, _, _ = make_core(t=6)
    # whole 16×16 cells, so the stub network propagates the object
    cells = (slice(0, 32), slice(0, 16))
    out = core.interact(onehot(1, 32, 48, region=cells), 0)
    interacted = out[0].copy()
    assert (interacted == 1).any() and (out[3] == 1).any()
    prob3 = core.get_prob(3).clone()
    m = torch.zeros(2, 1, 32, 48)
    m[0] = 1  # all background
    ret = core.update_mask_only(m, 3)
    assert ret is core.np_masks and (ret[3] == 0).all()
    assert torch.equal(core.get_prob(3), prob3)          # only the displayed mask changed
    core.update_mask_only(m, 0)
    assert (core.np_masks[0] == 0).all()
    core.interact(onehot(1, 32, 48, region=cells), 5)
    # frame 0 (an interaction, a stop of the new pass: not re-propagated) shows its probabilities again
    assert np.array_equal(core.np_masks[0], interacted)
    # frame 3 was re-propagated from the new interaction: its mask is its probabilities' argmax again
    assert (core.np_masks[3] == 1).any()
    assert np.array_equal(core.np_masks[3], core.get_prob(3).argmax(0)[0].numpy())


def test_cancel_leaves_consistent_state():
    core, _, _ = make_core(t=10)
    gen = core.interact_iter(onehot(1, 32, 48), 0)
    assert next(gen) == (0, 9)
    next(gen)
    next(gen)
    gen.close()
    assert core.interacted == {0} and core.interacted_frames == {0}
    assert core.is_propagated(1) and core.is_propagated(2) and not core.is_propagated(5)
    assert (core.np_masks[0] == onehot(1, 32, 48).argmax(0)[0].numpy()).all()


def test_padding_is_applied_and_removed():
    core, _, _ = make_core(t=4, h=30, w=45)
    assert core.pad == (1, 2, 1, 1) and (core.nh, core.nw) == (32, 48)
    out = core.interact(onehot(1, 30, 45)[..., :30, :45], 1)
    assert out.shape == (4, 30, 45)
    assert core.get_prob(1).shape == (2, 1, 32, 48)


@pytest.mark.parametrize("bad, err", [
    (lambda c: c.interact(torch.zeros(3, 1, 32, 48), 0), "channels"),
    (lambda c: c.interact(torch.zeros(2, 1, 20, 20), 0), "clip is 48×32"),
    (lambda c: c.interact(onehot(1, 32, 48), 14), "outside the clip"),
    (lambda c: c.interact(onehot(1, 32, 48), -1), "outside the clip"),
    (lambda c: c.update_mask_only(torch.zeros(2, 1, 32, 48), 99), "outside the clip"),
])
def test_bad_interactions_raise_clear_errors(bad, err):
    core, _, _ = make_core()
    with pytest.raises((ValueError, IndexError), match=err):
        bad(core)


def test_bad_sessions_raise_clear_errors():
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="num_objects"):
        InferenceCore(StubProp(), None, frames, 0, device="cpu")
    with pytest.raises(ValueError, match="raw 0-255"):
        InferenceCore(StubProp(), None, torch.full((1, 3, 3, 32, 32), 200.0), 1, device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        InferenceCore(StubProp(), None, np.zeros((3, 32, 32, 3), np.float32), 1, device="cpu")
    single = InferenceCore(StubProp(), None, frames[:1], 1, device="cpu")
    with pytest.raises(ValueError, match="single frame"):
        single.interact(onehot(1, 32, 32), 0)


def test_add_object_extends_state():
    core, _, _ = make_core(t=5)
    core.interact(onehot(1, 32, 48), 0)
    assert core.add_object() == 2 and core.num_objects == 2 and core.k == 2
    assert core.get_prob(3).shape == (3, 1, 32, 48) and (core.get_prob(3)[2] == 0).all()
    out = core.interact(onehot(2, 32, 48, label=2), 4)
    assert set(np.unique(out[4])) == {0, 2}      # the new object, where it was drawn
    assert set(np.unique(out[0])) == {0, 1}      # the first object keeps its interaction
    assert core.certain_frames == [0, 4]


def test_feature_cache_is_bounded_in_bytes():
    # three frames of five 1×2×2×3 stub features
    core, _, _ = make_core(t=14, feature_cache_bytes=3 * 5 * (2 * 2 * 3) * 4)
    core.interact(onehot(1, 32, 48), 6)
    assert core.feature_cache_frames == 3 and core.feature_bytes == 3 * 5 * (2 * 2 * 3) * 4


def test_compact_probability_storage_round_trips():
    from inference_core.prob_store import ProbStore
    from model.aggregate import aggregate_wbg
    store = ProbStore(3, 5, 16, 32, torch.device("cpu"), storage="uint16")
    prob = aggregate_wbg(torch.rand(3, 1, 16, 32), keep_bg=True)
    store.set(2, prob)
    back = store.get(2)
    assert back.shape == prob.shape
    assert (back - prob).abs().max() < 3 * 7.7e-6 + 1e-6   # background derived from the K channels
    assert store.nbytes == 3 * 16 * 32 * 2                  # K channels of uint16
    assert store.get(0)[0].eq(1e-7).all() and store.get(0)[1:].eq(0).all()   # never written: initial state
    store.add_object()
    assert store.get(2).shape == (5, 1, 16, 32) and (store.get(2)[4] == 0).all()
