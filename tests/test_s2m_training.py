"""S2M training (``train_s2m.py``): mask perturbation, scribble generation, the tamed robot, the LVIS reader,
the DeepLabV3+ 6-channel surgery, and a few training iterations on CPU with generated data, resume included."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.helpers_proptrain import (CROP, encode_rle_string, make_lvis_root, make_static_root, mask_to_rle_counts)


def _disk_gt(size: int = 64, radius: int = 20) -> np.ndarray:
    gt = np.zeros((size, size), np.uint8)
    cv2.circle(gt, (size // 2, size // 2), radius, 255, -1)
    return gt


def test_perturb_mask_reaches_iou_target():
    from dataset.mask_perturb import mask_iou, perturb_mask
    gt = _disk_gt()
    rng = np.random.RandomState(0)
    for target in (0.4, 0.6, 0.8, 0.95):
        seg = perturb_mask(gt, iou_target=target, rng=rng)
        iou = mask_iou(seg, gt)
        assert iou < target and iou > target - 0.3, (target, iou)
        assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 255}
    assert np.array_equal(gt, _disk_gt())  # input untouched


def test_tamed_robot_scribbles_inside_error_region():
    from dataset.tamed_robot import TamedRobot, bezier_curve
    error = np.zeros((80, 96), np.uint8)
    error[10:70, 10:26] = 1   # vertical bar
    error[55:70, 10:90] = 1   # joined horizontal bar (an L)
    cv2.circle(error, (70, 25), 10, 1, -1)  # separate blob
    near_error = cv2.dilate(error, np.ones((3, 3), np.uint8))
    for seed in range(4):
        np.random.seed(seed)
        scribble = TamedRobot().interact(error)
        assert scribble.shape == error.shape and scribble.dtype == np.uint8 and scribble.sum() > 40
        # inside the error region (the half-resolution skeleton may touch its border by one pixel)
        assert np.all(scribble[near_error == 0] == 0)
        assert scribble[error == 1].sum() / scribble.sum() > 0.9
        # one stroke per connected error region
        n_components = cv2.connectedComponents(cv2.dilate(scribble, np.ones((3, 3), np.uint8)))[0] - 1
        assert n_components == 2
    assert TamedRobot().interact(np.zeros((20, 20), np.uint8)).sum() == 0
    # Bézier smoothing keeps the end points
    pts = np.array([[0.0, 0.0], [5.0, 10.0], [10.0, 0.0]])
    curve = bezier_curve(pts, 50)
    assert curve.shape == (50, 2) and {tuple(curve[0]), tuple(curve[-1])} == {(0.0, 0.0), (10.0, 0.0)}


def test_scribbles_mark_false_negatives_and_positives():
    from dataset.scribble import get_scribble, zhang_suen_thinning
    region = np.zeros((40, 40), np.uint8)
    region[10:30, 5:35] = 1
    thin = zhang_suen_thinning(region)
    assert thin.sum() > 0 and np.all(thin[region == 0] == 0) and thin.sum() < region.sum() // 4

    gt = _disk_gt(96, 28)
    mask = np.zeros_like(gt)
    mask[:, :48] = gt[:, :48]          # right half missed (false negative)
    cv2.rectangle(mask, (2, 2), (20, 20), 255, -1)  # false positive in the corner
    rng = np.random.RandomState(1)
    for from_zero in (False, True):
        for _ in range(6):
            pos, neg = get_scribble(mask if not from_zero else np.zeros_like(gt), gt, from_zero, rng=rng)
            assert pos.dtype == np.uint8 and neg.dtype == np.uint8 and set(np.unique(pos)) <= {0, 1}
            assert pos.sum() + neg.sum() > 0
            grown_gt = cv2.dilate((gt > 0).astype(np.uint8), np.ones((15, 15), np.uint8))
            # positives lie on the object (a few pixels of labelling error allowed), negatives off it
            assert pos.sum() == 0 or (pos & grown_gt).sum() / pos.sum() > 0.9
            eroded_gt = cv2.erode((gt > 0).astype(np.uint8), np.ones((15, 15), np.uint8))
            assert neg.sum() == 0 or (neg & eroded_gt).sum() / neg.sum() < 0.1


def test_lvis_reader_decodes_polygons_and_rle(tmp_path):
    from dataset.lvis import LVIS, rle_string_to_counts
    counts = [7, 3, 0, 120, 5, 1]
    assert rle_string_to_counts(encode_rle_string(counts)) == counts
    root = make_lvis_root(tmp_path / "lvis")
    lvis = LVIS(root / "lvis_v1_train.json")
    assert sorted(lvis.get_ann_ids(area_rng=[50 * 50, float("inf")])) == [11, 12, 21]
    assert sorted(lvis.get_ann_ids(img_ids=[2], area_rng=[30 * 30, float("inf")])) == [21]
    name, square_poly = lvis.load_img_ann(11)
    _, square_rle = lvis.load_img_ann(21)
    assert name == "000000000001.jpg" and square_poly.shape == (72, 80)
    assert np.array_equal(square_poly, square_rle)  # same square as a polygon and as compressed RLE
    _, blob = lvis.load_img_ann(12)
    expected = np.zeros((72, 80), np.uint8)
    cv2.circle(expected, (40, 36), 30, 1, -1)
    assert np.array_equal(blob, expected)
    assert mask_to_rle_counts(blob)[0] > 0


def test_deeplab_surgery_six_channel_stem():
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    from model.s2m.surgery import STEM_KEY, deeplab_to_s2m_state
    torch.manual_seed(0)
    net = deeplabv3plus_resnet50()
    own = net.state_dict()
    # a VainF-like 21-class, 3-channel DeepLabV3+ state
    source = {k: v.clone() for k, v in own.items()}
    source[STEM_KEY] = torch.randn(64, 3, 7, 7)
    source["classifier.classifier.3.weight"] = torch.randn(21, 256, 1, 1)
    source["classifier.classifier.3.bias"] = torch.randn(21)
    state = deeplab_to_s2m_state(source, own)
    net.load_state_dict(state)  # strict
    stem = net.state_dict()[STEM_KEY]
    assert stem.shape == (64, 6, 7, 7) and torch.equal(stem[:, :3], source[STEM_KEY])
    extra = stem[:, 3:].reshape(64, -1)  # orthogonal block: 64 × 147 with orthonormal rows
    assert torch.allclose(extra @ extra.T, torch.eye(64), atol=1e-4)
    assert net.state_dict()["classifier.classifier.3.weight"].shape == (1, 256, 1, 1)
    assert torch.equal(net.state_dict()["classifier.classifier.3.bias"], torch.zeros(1))
    key = "backbone.layer1.0.conv1.weight"
    assert torch.equal(net.state_dict()[key], source[key])


def test_s2m_datasets_samples(tmp_path):
    from dataset.lvis import LVIS
    from dataset.s2m_dataset import LVISTransformDataset, S2MStaticDataset
    static = make_static_root(tmp_path / "static")
    lvis_root = make_lvis_root(tmp_path / "lvis")
    ds_static = S2MStaticDataset(static / "fss", 0, crop_size=CROP, verbose=False)
    ds_lvis = LVISTransformDataset(lvis_root / "train2017", LVIS(lvis_root / "lvis_v1_train.json"), crop_size=CROP,
                                   verbose=False)
    assert len(ds_static) == 2 and len(ds_lvis) == 3
    np.random.seed(0)
    for ds in (ds_static, ds_lvis):
        for i in list(range(len(ds))) * 2:
            s = ds[i]
            assert s["rgb"].shape == (3, CROP, CROP) and s["gt"].shape == s["seg"].shape == (1, CROP, CROP)
            assert s["srb"].shape == (2, CROP, CROP) and set(s["srb"].unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(s["cls_gt"], (s["gt"][0] > 0.5).long())
            assert 0 <= s["seg"].min() and s["seg"].max() <= 1


# ------------------------------------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    from model.s2m.surgery import STEM_KEY
    root = tmp_path_factory.mktemp("s2mtrain")
    torch.manual_seed(1)
    state = deeplabv3plus_resnet50().state_dict()
    state[STEM_KEY] = torch.randn(64, 3, 7, 7) * 0.05
    state["classifier.classifier.3.weight"] = torch.randn(21, 256, 1, 1) * 0.05
    state["classifier.classifier.3.bias"] = torch.zeros(21)
    deeplab = root / "best_deeplabv3plus_resnet50_voc_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": state, "best_score": 0.77}, deeplab)
    return SimpleNamespace(root=root, static=make_static_root(root / "static"), lvis=make_lvis_root(root / "lvis"),
                           deeplab=deeplab)


def _args(ws, *extra: str) -> list[str]:
    return ["--static_root", str(ws.static), "--lvis_root", str(ws.lvis), "--crop_size", str(CROP),
            "--num_workers", "0", "-b", "2", "--save_dir", str(ws.root / "saves"), "--log_dir", str(ws.root / "log"),
            *extra]


@pytest.mark.slow
def test_s2m_trains_from_deeplab_and_resumes(ws):
    import train_s2m
    from model.factory import load_s2m
    from util.hyper_para import parse_s2m_args
    torch.set_num_threads(2)
    trainer = train_s2m.run(parse_s2m_args(_args(ws, "--id", "s2m", "-i", "2", "--load_deeplab", str(ws.deeplab),
                                                 "--report_interval", "1", "--image_interval", "1")))
    assert trainer.iteration == 2 and all(np.isfinite(trainer.loss_history))
    assert trainer.network.training  # batch-norm in train mode
    run = next((ws.root / "saves").glob("*_s2m"))
    weights = run / f"{run.name}_2.pth"
    load_s2m(weights)  # loadable as saves/s2m.pth
    bn_mean = torch.load(weights, weights_only=True)["backbone.bn1.running_mean"]
    assert bn_mean.abs().sum() > 0  # statistics were updated (they start at zero)

    checkpoint = run / f"{run.name}_checkpoint.pth"
    saved = torch.load(checkpoint, weights_only=True)
    resumed = train_s2m.run(parse_s2m_args(_args(ws, "--id", "NULL", "-i", "2", "--load_model", str(checkpoint))))
    assert resumed.iteration == 2 and resumed.loss_history == []
    opt = resumed.optimizer.state_dict()
    for idx, state in saved["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(opt["state"][idx][key], value), (idx, key)
    assert resumed.scheduler.state_dict() == saved["scheduler"]


def test_bad_deeplab_checkpoint_is_one_line_error(ws, tmp_path, capsys):
    import train_s2m
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    rc = train_s2m.main(_args(ws, "-i", "1", "--load_deeplab", str(junk)))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "junk.pth" in err
