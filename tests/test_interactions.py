"""Semantics of the Qt-free interactions: click (f-BRS), scribble (S2M), free painting and local control,
as the original GUI defines them (docs/ORIGINAL.md, "Interactions")."""
from __future__ import annotations

import numpy as np
import torch

from inference_core.interaction.interactions import (ClickInteraction, CropperInteraction, FreeInteraction,
                                                     LocalInteraction, ScribbleInteraction, StrokeCanvas,
                                                     bbox_from_points)
from model.aggregate import aggregate_sbg, aggregate_wbg
from util.tensor_util import compute_pad, pad_divide_by, unpad

H, W = 40, 52          # true size; padded to 48×64
K = 2


def _image():
    g = torch.Generator().manual_seed(0)
    img, pad = pad_divide_by(torch.randn(1, 3, H, W, generator=g), 16)
    return img, pad


def _soft_prev():
    g = torch.Generator().manual_seed(1)
    p, _ = pad_divide_by(torch.rand(K, 1, H, W, generator=g), 16)
    return p


class FakeS2M:
    """Records the scribble maps it is given and returns a deterministic function of them."""

    def __init__(self):
        self.calls = []

    def interact(self, image, prev_mask, scribbles):
        self.calls.append((prev_mask.clone(), scribbles.copy()))
        out = torch.zeros(K, 1, H, W)
        for k in range(1, K + 1):
            out[k - 1, 0] = torch.from_numpy((scribbles == k).astype(np.float32))
        return pad_divide_by(out, 16)[0]


class FakeFBRS:
    """Each click adds a disc; undo returns the previous binary map (None when none is left)."""

    def __init__(self, shape):
        self.shape = shape
        self.history = []
        self.coords = []

    def interact(self, image, x, y, is_positive):
        self.coords.append((x, y, is_positive))
        m = torch.zeros(self.shape) if not self.history else self.history[-1].clone()
        yy, xx = torch.meshgrid(torch.arange(self.shape[-2]), torch.arange(self.shape[-1]), indexing="ij")
        m[0, 0][(yy - y) ** 2 + (xx - x) ** 2 <= 16] = float(is_positive)
        self.history.append(m)
        return m

    def undo_click(self):
        self.history.pop()
        return self.history[-1].clone() if self.history else None


def test_click_replaces_target_channel_and_aggregates_hard():
    img, pad = _image()
    prev = _soft_prev()
    fbrs = FakeFBRS((1, 1) + img.shape[-2:])
    it = ClickInteraction(img, prev, (H, W), fbrs, tar_obj=2, pad=pad)
    canvas = StrokeCanvas(H, W, K)
    it.push_point(10.4, 20.0, neg=False, vis=canvas)
    out = it.predict()
    # the controller sees padded coordinates
    assert fbrs.coords[0] == (10.4 + pad[0], 20.0 + pad[2], True)
    assert torch.equal(it.out_prob[0], prev[0])                       # other object keeps soft values
    assert torch.equal(it.out_prob[1, 0], fbrs.history[-1][0, 0])     # target = the binary f-BRS map
    assert torch.allclose(out, aggregate_sbg(it.out_prob, keep_bg=True, hard=True))
    assert out.shape == (K + 1, 1) + img.shape[-2:]
    assert canvas.alpha[20, 10, 0] == 1.0 and tuple(canvas.colour[20, 10]) == (50, 255, 50)
    # the prev mask was copied, not referenced
    assert not it.prev_mask.data_ptr() == prev.data_ptr()


def test_click_undo():
    img, pad = _image()
    prev = _soft_prev()
    fbrs = FakeFBRS((1, 1) + img.shape[-2:])
    it = ClickInteraction(img, prev, (H, W), fbrs, tar_obj=1, pad=pad)
    it.push_point(10, 10, neg=False)
    first = it.predict().clone()
    assert not it.can_undo()                 # the first click is undone by dropping the interaction
    it.push_point(30, 30, neg=False)
    it.predict()
    assert it.can_undo()
    assert torch.equal(it.undo(), first)
    assert len(it.clicks) == 1
    # when f-BRS has no history left the object's channel reverts to prev_mask
    fbrs.history.clear()
    fbrs.history.append(torch.zeros(1))
    it.clicks.append((1, 1, True))
    it.undo()
    assert torch.equal(it.out_prob, prev)


def test_scribble_draws_labels_and_aggregates_hard():
    img, pad = _image()
    prev_hard = torch.zeros(1, *img.shape[-2:], dtype=torch.uint8)
    s2m = FakeS2M()
    it = ScribbleInteraction(img, prev_hard, (H, W), s2m, K)
    assert it.drawn_map.shape == (H, W) and (it.drawn_map == 255).all()
    canvas = StrokeCanvas(H, W, K)
    for x in (5, 10, 15):
        it.push_point(x, 8, 2, canvas)
    it.end_path()
    out = it.predict()
    # a 3-px line of label 2 from (5,8) to (15,8)
    assert (it.drawn_map[7:10, 5:16] == 2).all()
    assert it.drawn_map[11, 10] == 255 and it.drawn_map[5, 10] == 255
    assert np.isclose(canvas.alpha[8, 10, 0], 0.75)
    assert torch.allclose(out, aggregate_wbg(it.out_prob, keep_bg=True, hard=True))
    assert out[2, 0, 8 + pad[2], 10 + pad[0]] > 0.99
    # background stroke (label 0), then undo back to the first stroke only
    first = it.drawn_map.copy()
    it.push_point(5, 30, 0)
    it.push_point(20, 30, 0)
    it.end_path()
    it.predict()
    assert (it.drawn_map[30, 5:21] == 0).all()
    assert it.can_undo()
    it.undo()
    assert np.array_equal(it.drawn_map, first)
    assert not it.can_undo()
    # S2M always got the frozen previous hard mask
    assert all(torch.equal(c[0], prev_hard) for c in s2m.calls)


def test_single_point_stroke_draws_nothing():
    img, _ = _image()
    it = ScribbleInteraction(img, torch.zeros(1, *img.shape[-2:], dtype=torch.uint8), (H, W), FakeS2M(), K)
    it.push_point(5, 5, 1)
    it.end_path()
    assert (it.drawn_map == 255).all()


def test_free_painting_is_soft_and_sets_channels():
    img, pad = _image()
    prev = _soft_prev()
    it = FreeInteraction(img, prev, (H, W), K, pad, brush_size=5)
    it.push_point(10, 10, 1)
    it.push_point(30, 10, 1)
    it.end_path()
    out = it.predict()
    dm = it.drawn_map
    assert dm.shape == (K, 1, H, W)
    assert (dm[0, 0, 10, 10:31] == 1).all() and (dm[1, 0, 10, 10:31] == 0).all()
    # untouched pixels keep the previous soft values
    assert np.allclose(dm[:, 0, 30, 40], unpad(prev, pad)[:, 0, 30, 40].numpy())
    assert torch.allclose(out, aggregate_sbg(it.out_prob, keep_bg=True))
    assert torch.allclose(unpad(it.out_prob, pad), torch.from_numpy(dm))
    # soft: not one-hot everywhere
    assert ((out > 0.01) & (out < 0.99)).any()
    painted = dm.copy()
    # background stroke sets all objects to 0
    it.set_size(3)
    it.push_point(20, 25, 0)
    it.push_point(20, 35, 0)
    it.end_path()
    it.predict()
    assert (it.drawn_map[:, 0, 25:36, 20] == 0).all()
    assert it.can_undo()
    it.undo()
    assert np.array_equal(it.drawn_map, painted)
    assert not it.can_undo()


def test_cropper_and_local_stitching_with_margin():
    img, pad = _image()
    prev = _soft_prev()
    bbox = bbox_from_points((30.4, 25.2), (5.6, 4.0))       # dragged bottom-right to top-left
    assert bbox == (6, 30, 4, 25)
    lx, ux, ly, uy = bbox
    crop = CropperInteraction(img, prev, pad, bbox)
    assert (crop.h, crop.w) == (uy - ly + 1, ux - lx + 1)
    assert crop.pad == compute_pad(crop.h, crop.w)
    assert torch.equal(unpad(crop.out_prob, crop.pad), unpad(prev, pad)[:, :, ly:uy + 1, lx:ux + 1])
    assert torch.equal(unpad(crop.im_crop, crop.pad), unpad(img, pad)[:, :, ly:uy + 1, lx:ux + 1])
    assert torch.allclose(crop.out_mask, aggregate_sbg(crop.out_prob, keep_bg=True))

    region = torch.full_like(crop.out_prob, 0.9)
    local = LocalInteraction(img, prev, (H, W), bbox, region, pad, crop.pad)
    res = unpad(local.out_prob, pad)
    base = unpad(prev, pad)
    pasted = torch.zeros(H, W, dtype=torch.bool)
    pasted[ly + 3:uy - 2, lx + 3:ux - 2] = True        # 3-px margin on every side is not pasted
    assert torch.all(res[:, 0][:, pasted] == 0.9)
    assert torch.equal(res[:, 0][:, ~pasted], base[:, 0][:, ~pasted])
    assert torch.allclose(local.predict(), aggregate_sbg(local.out_prob, keep_bg=True))
    assert not local.can_undo()


def test_local_small_box_pasted_whole():
    img, pad = _image()
    prev = _soft_prev()
    bbox = (10, 15, 10, 30)        # 6 px wide: not larger than 6 → pasted entirely
    crop = CropperInteraction(img, prev, pad, bbox)
    region = torch.full_like(crop.out_prob, 0.25)
    res = unpad(LocalInteraction(img, prev, (H, W), bbox, region, pad, crop.pad).out_prob, pad)
    assert torch.all(res[:, :, 10:31, 10:16] == 0.25)
    assert torch.equal(res[:, :, :10], unpad(prev, pad)[:, :, :10])


def test_stroke_canvas_composite_and_snapshots():
    c = StrokeCanvas(10, 10, 8)
    img = np.full((10, 10, 3), 100, np.uint8)
    assert c.composite(img) is img
    snap = c.snapshot()
    c.line((0, 5), (9, 5), 8, thickness=1)          # object 8: beyond the original 6 colours
    out = c.composite(img)
    assert not np.array_equal(out[5], img[5]) and np.array_equal(out[0], img[0])
    c.restore(snap)
    assert not c.alpha.any()
