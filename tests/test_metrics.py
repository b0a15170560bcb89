"""J and boundary F: hand-derived cases and agreement with davisinteractive's own metrics."""
from __future__ import annotations

import numpy as np
import pytest

import util.davis_compat  # noqa: F401  (before davisinteractive)
from dataset.synthetic import make_clip
from util.metrics import (boundary_f, boundary_map, boundary_radius, db_statistics, disk, evaluate_sequence,
                          jaccard)


def _square(h: int, w: int, top: int, left: int, side: int, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top:top + side, left:left + side] = value
    return m


def test_identical_masks_score_one():
    gt = np.stack([_square(40, 50, 5, 5, 12), _square(40, 50, 10, 20, 15)])
    gt[:, 30:35, 30:45] = 2
    np.testing.assert_array_equal(jaccard(gt, gt), np.ones((2, 2)))
    np.testing.assert_array_equal(boundary_f(gt, gt), np.ones((2, 2)))
    scores = evaluate_sequence(gt, gt)
    assert scores.JF == 1.0 and scores.J_recall.tolist() == [1.0, 1.0] and scores.J_decay.tolist() == [0.0, 0.0]


def test_empty_prediction_of_present_object_scores_zero_and_absent_object_one():
    gt = _square(30, 30, 5, 5, 10)[None]
    empty = np.zeros_like(gt)
    assert jaccard(gt, empty, 2).tolist() == [[0.0, 1.0]]  # object 2 absent from both: 1
    assert boundary_f(gt, empty, 2).tolist() == [[0.0, 1.0]]
    # a prediction of an object absent from the ground truth: J 0, F 0 (precision 0)
    assert jaccard(empty, gt, 1).tolist() == [[0.0]]
    assert boundary_f(empty, gt, 1).tolist() == [[0.0]]


def test_shifted_square_iou():
    gt = _square(40, 40, 10, 10, 10)[None]
    pred = _square(40, 40, 10, 12, 10)[None]  # 2 px to the right: overlap 10×8, union 10×12
    assert jaccard(gt, pred)[0, 0] == pytest.approx(80 / 120)
    assert boundary_radius(40, 40) == 1  # ceil(0.008 · 56.6)
    # Boundary rings (seg2bmap): gt rows 9/19 × cols 9..19 plus cols 9/19 × rows 9..19 (40 px); pred the same
    # 2 columns to the right. With the 1-px cross: each shared top/bottom row matches 10 of its 11 pixels, and of
    # the 2×9 vertical-side pixels only the 2 next to those rows on the inner side match -> 22/40 both ways.
    assert boundary_f(gt, pred)[0, 0] == pytest.approx(22 / 40)


def test_boundary_radius_follows_the_diagonal():
    assert boundary_radius(480, 854) == 8  # ceil(0.008 · 979.6)
    assert boundary_radius(120, 160) == 2  # ceil(0.008 · 200) = ceil(1.6)
    assert boundary_radius(100, 100) == 2  # ceil(1.13)
    assert boundary_radius(480, 854, bound_th=3) == 3
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_boundary_map_of_a_square_is_a_closed_ring():
    """seg2bmap marks a ring of side+1 pixels offset towards the origin: 4·side pixels for a square."""
    side = 6
    m = _square(20, 20, 5, 7, side).astype(bool)
    b = boundary_map(m)
    assert b.sum() == 4 * side
    # square rows 5..10, columns 7..12 -> ring rows 4..10, columns 6..12 (7×7, 24 pixels)
    expected = np.zeros_like(b)
    expected[4, 6:13] = expected[10, 6:13] = True  # top row (outside) and bottom row (inside)
    expected[4:11, 6] = expected[4:11, 12] = True  # left column (outside) and right column (inside)
    np.testing.assert_array_equal(b, expected)


def test_boundary_f_hand_derived():
    # 100×100 image: tolerance ceil(0.008·141.4) = 2 px
    gt = _square(100, 100, 20, 20, 20)[None]
    # a shift by up to the tolerance keeps every boundary pixel matched
    for shift in (1, 2):
        assert boundary_f(gt, _square(100, 100, 20, 20 + shift, 20)[None])[0, 0] == 1.0
    # the prediction adds a far-away second component of the same size: precision 1/2, recall 1 -> F = 2/3
    pred = gt.copy()
    pred[0, 60:80, 60:80] = 1
    assert boundary_f(gt, pred)[0, 0] == pytest.approx(2 / 3)
    assert jaccard(gt, pred)[0, 0] == pytest.approx(0.5)
    # disjoint and far apart: nothing matches
    assert boundary_f(gt, _square(100, 100, 70, 70, 20)[None])[0, 0] == 0.0


def test_db_statistics():
    mean, recall, decay = db_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], float))
    # bins for 8 frames: round(linspace(1, 8, 5)) - 1 = [0, 2, 3, 5, 7]; first bin frames 0..2, last 5..7
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)
    mean, recall, decay = db_statistics(np.array([0.2, np.nan, 0.8, 0.6]))
    assert mean == pytest.approx(1.6 / 3) and recall == pytest.approx(2 / 3)


def test_evaluate_sequence_summary():
    gt = np.zeros((4, 30, 30), np.uint8)
    gt[:, 5:15, 5:15] = 1
    gt[:, 20:28, 20:28] = 2
    pred = gt.copy()
    pred[2:] = 0  # the second half is missed completely
    s = evaluate_sequence(gt, pred)
    assert s.J.shape == (4, 2) and s.F.shape == (4, 2)
    np.testing.assert_allclose(s.J_mean, [0.5, 0.5])
    np.testing.assert_allclose(s.J_decay, [1.0, 1.0])
    assert s.JF == pytest.approx(0.5)
    d = s.as_dict()
    assert d["J&F"] == pytest.approx(0.5) and d["J-per-object"] == [0.5, 0.5]
    inner = evaluate_sequence(gt, pred, skip_first_last=True)
    assert inner.J.shape == (2, 2)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        jaccard(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="no object"):
        boundary_f(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_davisinteractive(seed):
    from davisinteractive.metrics import batched_f_measure, batched_jaccard

    rng = np.random.default_rng(seed)
    num_objects = 1 + seed % 3
    clip = make_clip(num_frames=4, width=72 + 9 * seed, height=54 + 5 * seed, num_objects=num_objects, seed=seed)
    gt = clip.labels.astype(np.int64)
    pred = np.roll(gt, shift=(seed, 2 * seed), axis=(1, 2))
    noise = rng.random(gt.shape) < 0.03
    pred[noise] = rng.integers(0, num_objects + 1, noise.sum())
    pred[1] = 0  # an empty prediction
    gt[2, :4] = 255  # void pixels
    if num_objects > 1:
        gt[3][gt[3] == 2] = 0  # an object missing from the ground truth in one frame
    for bound_th in (0.008, 3):
        ours_j = jaccard(gt, pred, num_objects)
        ours_f = boundary_f(gt, pred, num_objects, bound_th)
        ref_j = batched_jaccard(gt, pred, average_over_objects=False, nb_objects=num_objects)
        ref_f = batched_f_measure(gt, pred, average_over_objects=False, nb_objects=num_objects, bound_th=bound_th)
        np.testing.assert_allclose(ours_j, ref_j, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours_f, ref_f, rtol=0, atol=1e-6)
    # pure noise label maps: many tiny boundaries
    a, b = rng.integers(0, 3, (3, 24, 32)), rng.integers(0, 3, (3, 24, 32))
    np.testing.assert_allclose(boundary_f(a, b, 2), batched_f_measure(a, b, False, 2), rtol=0, atol=1e-6)
    np.testing.assert_allclose(jaccard(a, b, 2), batched_jaccard(a, b, False, 2), rtol=0, atol=1e-6)
