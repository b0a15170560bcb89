"""Options of the inference core that must never change a result, and a multi-object replay on a clip
whose size is not a multiple of 16 (padding added and removed), with seeded weights (no reference data).

* ``mem_profile`` 1–3 only move data (results on the CPU, small feature caches): the same masks as 0;
* ``channels_last=False`` only changes the summation order: the same probabilities within float error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.workload import one_hot, spoil_labels
from dataset.synthetic import make_clip
from inference_core import InferenceCore
from model.fusion_net import FusionNet
from model.propagation.prop_net import PropagationNetwork
from tests.helpers_weights import seeded_state_dict

K = 3
T = 6
# 117×99 pads to 128×112 (8×7 = 56 memory positions: enough for the top-50 read); pad (5, 6, 6, 7)
WIDTH, HEIGHT = 117, 99


@pytest.fixture(scope="module")
def clip():
    return make_clip(num_frames=T, width=WIDTH, height=HEIGHT, num_objects=K, seed=11)


@pytest.fixture(scope="module")
def state_dicts():
    return seeded_state_dict("propagation_model"), seeded_state_dict("fusion")


def _nets(state_dicts):
    prop, fuse = PropagationNetwork().eval(), FusionNet().eval()
    prop.load_state_dict(state_dicts[0])
    fuse.load_state_dict(state_dicts[1])
    return prop, fuse


def _replay(clip, state_dicts, **options) -> tuple[InferenceCore, list[np.ndarray]]:
    """interact at frame 3 (forward + backward passes), show a correction on frame 5 without
    propagating, then interact at frame 0 with a corrected mask (frames 1, 2 fused): the masks after
    each step."""
    prop, fuse = _nets(state_dicts)
    core = InferenceCore(prop, fuse, clip.frames, K, device="cpu", mem_freq=2, **options)
    steps = [core.interact(one_hot(clip.labels[3], K), 3).copy()]
    steps.append(core.update_mask_only(one_hot(clip.labels[5], K), 5).copy())
    steps.append(core.interact(one_hot(spoil_labels(clip.labels[0], K, seed=1), K), 0).copy())
    return core, steps


@pytest.fixture(scope="module")
def baseline(clip, state_dicts):
    return _replay(clip, state_dicts)


def test_multi_object_padded_replay(clip, baseline):
    core, steps = baseline
    assert (core.h, core.w, core.nh, core.nw) == (HEIGHT, WIDTH, 112, 128) and core.pad == (5, 6, 6, 7)
    for masks in steps:
        assert masks.shape == (T, HEIGHT, WIDTH) and masks.dtype == np.uint8
        assert set(np.unique(masks)) <= set(range(K + 1))
    # an interacted frame shows exactly the mask it was given, every object included
    assert np.array_equal(steps[0][3], clip.labels[3]) and set(np.unique(clip.labels[3])) == set(range(K + 1))
    assert np.array_equal(steps[1][5], clip.labels[5])                       # shown without propagating
    assert np.array_equal(steps[2][0], spoil_labels(clip.labels[0], K, seed=1))
    assert np.array_equal(steps[2][3], clip.labels[3])                       # the first interaction stays
    assert core.interacted_frames == {0, 3}
    # frames 1, 2 were re-propagated (and fused); 4, 5 kept the first round's result, and frame 5's
    # shown-only correction gave way to its probabilities again
    assert np.array_equal(steps[2][4:], steps[0][4:])
    assert not np.array_equal(steps[2][1:3], steps[0][1:3])
    for t in range(T):
        prob = core.get_prob(t)
        assert prob.shape == (K + 1, 1, 112, 128)
        # a distribution over background + objects at every pixel of the frame (an interaction mask is
        # zero-padded, as the original pads it, so the pad area is only a distribution on propagated frames)
        inside = prob[:, :, 6:6 + HEIGHT, 5:5 + WIDTH].sum(0)
        assert torch.allclose(inside, torch.ones_like(inside), atol=1e-5)
        # the displayed masks are the un-padded argmax of the probabilities
        top = prob.argmax(0)[0, 6:6 + HEIGHT, 5:5 + WIDTH].numpy()
        assert np.array_equal(core.np_masks[t], top)


@pytest.mark.parametrize("mem_profile", [1, 2, 3])
def test_mem_profile_never_changes_a_result(clip, state_dicts, baseline, mem_profile):
    core0, steps0 = baseline
    core, steps = _replay(clip, state_dicts, mem_profile=mem_profile)
    for a, b in zip(steps0, steps):
        assert np.array_equal(a, b)
    for t in range(T):
        assert torch.equal(core.get_prob(t).cpu(), core0.get_prob(t).cpu())


def test_channels_last_off_gives_the_same_result(clip, state_dicts, baseline):
    core0, steps0 = baseline
    core, steps = _replay(clip, state_dicts, channels_last=False)
    for t in range(T):
        p0, p1 = core0.get_prob(t), core.get_prob(t)
        assert (p0 - p1).abs().max().item() < 1e-4
        # masks equal wherever the decision is not a near tie of two objects
        top2 = p0.topk(2, dim=0).values[:, 0, 6:6 + HEIGHT, 5:5 + WIDTH]
        clear = (top2[0] - top2[1] > 1e-3).numpy()
        assert np.array_equal(steps0[2][t][clear], steps[2][t][clear])


def test_a_closed_session_is_freed_at_once(clip, state_dicts):
    """Dropping the last reference to a session frees it (and its cached features and probabilities)
    right away: nothing in it refers back to it, so it never waits for Python's cycle collector."""
    import gc
    import weakref

    core, _ = _replay(clip, state_dicts)
    core.add_object()
    core.interact(one_hot(clip.labels[2], K + 1), 2)
    ref = weakref.ref(core)
    gc.disable()
    try:
        del core
        assert ref() is None
    finally:
        gc.enable()
