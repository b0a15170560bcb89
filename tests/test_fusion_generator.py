"""The propagation-without-fusion pass: memory schedule, output order, aggregation and unpadding."""
from __future__ import annotations

import pytest
import torch

from inference_core.fusion_generator import FusionGenerator
from model.aggregate import aggregate_wbg


class RecordingProp:
    """Stands in for PropagationNetwork: frame t is an image filled with t; a memory entry's key holds
    the index of the frame it was memorised from; every read records (query frame, memory frames)."""

    def __init__(self):
        self.reads: list[tuple[int, list[int]]] = []

    def memorize(self, frame, masks):
        t = float(frame.max())
        k = masks.shape[0]
        return torch.full((k, 1, 1, 1, 1), t), torch.full((k, 1, 1, 1, 1), t)

    def get_query_features(self, frame):
        return (frame,)

    def segment_with_features(self, keys, values, frame):
        self.reads.append((int(frame.max()), [int(x) for x in keys[0, 0, :, 0, 0].tolist()]))
        k = keys.shape[0]
        return torch.full((k, 1, *frame.shape[-2:]), 0.25 + 0.5 * (frame.max() % 2))


def make(num_frames: int, mem_freq: int, h: int = 16, w: int = 16):
    images = torch.arange(num_frames, dtype=torch.float32).view(num_frames, 1, 1, 1).expand(-1, 3, h, w).clone()
    net = RecordingProp()
    return net, FusionGenerator(net, images, mem_freq)


def test_memory_schedule_matches_the_original_pass():
    net, gen = make(num_frames=9, mem_freq=2)
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, :8] = 1
    masks[1, :, 8:] = 1
    order = [f for f, _ in gen.propagate(masks, idx=2, left=0, right=8)]
    assert order == [2, 3, 4, 5, 6, 7, 8, 1, 0]
    # forward: reference + every committed frame (>= mem_freq after the last) + the previous frame
    assert net.reads[:6] == [(3, [2]), (4, [2, 3]), (5, [2, 4]), (6, [2, 4, 5]), (7, [2, 4, 6]), (8, [2, 4, 6, 7])]
    # backward restarts from the reference alone
    assert net.reads[6:] == [(1, [2]), (0, [2, 1])]


def test_outputs_are_aggregated_and_unpadded():
    net, gen = make(num_frames=3, mem_freq=5, h=20, w=30)  # padded to 32×32 inside
    masks = torch.zeros(1, 20, 30)
    masks[0, 5:15, 5:25] = 1
    results = dict(gen.propagate(masks, idx=0, left=0, right=2))
    assert set(results) == {0, 1, 2}
    assert all(p.shape == (2, 20, 30) for p in results.values())
    assert torch.allclose(results[0], aggregate_wbg(masks.unsqueeze(1), keep_bg=True)[:, 0])
    expected = aggregate_wbg(torch.full((1, 1, 20, 30), 0.75), keep_bg=True)[:, 0]
    assert torch.allclose(results[1], expected)
    assert torch.allclose(results[0].sum(0), torch.ones(20, 30))


def test_range_is_checked():
    _, gen = make(num_frames=4, mem_freq=1)
    with pytest.raises(ValueError, match="left"):
        list(gen.propagate(torch.zeros(1, 1, 16, 16), idx=1, left=2, right=3))
