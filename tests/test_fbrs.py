"""f-BRS: network, distance maps, transforms, predictor and controller against the original's fixtures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.factory import load_fbrs
from model.fbrs import build_fbrs_model, click_distance_maps

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def fbrs_state(formula):
    """Formula weights over the full state dict (what the fixtures were produced with)."""
    return formula.formula_state_dict(build_fbrs_model().state_dict())


@pytest.fixture(scope="module")
def fbrs_net(fbrs_state):
    net = build_fbrs_model()
    net.load_state_dict(fbrs_state)
    return net.eval()


def test_state_dict_keys_match_release(read_keys):
    sd = build_fbrs_model().state_dict()
    mine = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert mine == [tuple(r) for r in read_keys("fbrs")]
    backbone = [k for k in sd if "feature_extractor.backbone" in k and "num_batches_tracked" not in k]
    assert len(backbone) == 275


@pytest.mark.parametrize("drop_nbt", [False, True], ids=["full", "release_without_num_batches_tracked"])
def test_factory_loads_plain_state_dict(fbrs_state, tmp_path, drop_nbt):
    sd = {k: v for k, v in fbrs_state.items() if not (drop_nbt and k.endswith("num_batches_tracked"))}
    path = tmp_path / "fbrs.pth"
    torch.save(sd, path)
    net = load_fbrs(path)
    assert not net.training
    loaded = net.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    assert all(not p.requires_grad for p in net.parameters())


def test_distance_maps_match_cython(load_fixture):
    z = load_fixture("fbrs")
    out = click_distance_maps(torch.from_numpy(z["distmap_points"])[None], 60, 80, 260.0)[0].numpy()
    assert out.dtype == np.float32
    assert np.abs(out - z["distmap_out"]).max() <= 1e-8
    assert np.abs(out - z["distmap_exact_euclid"]).max() <= 1e-8


def test_distance_maps_round_half_even_and_invalid():
    # (30.5, 41.5) -> (30, 42) with Python's round; (-1, -1) ignored; empty layer = 1e6
    pts = torch.tensor([[[30.5, 41.5], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]])
    out = click_distance_maps(pts, 60, 80, 260.0)[0]
    assert out[0, 30, 42] == 0 and out[0, 31, 42] > 0
    assert torch.all(out[1] == 1e6)


def test_network_matches_original(fbrs_net, load_fixture):
    z = load_fixture("fbrs")
    image, points = torch.from_numpy(z["image_norm"]), torch.from_numpy(z["net_points"])
    with torch.no_grad():
        coord = fbrs_net.dist_maps(image, points)
        logits = fbrs_net(image, points)["instances"]
    assert np.abs(coord.numpy() - z["net_coord_features"]).max() <= 1e-6
    assert logits.shape == (1, 1, 240, 320)
    assert np.abs(logits.numpy() - z["net_instances_logits"]).max() <= 1e-4
