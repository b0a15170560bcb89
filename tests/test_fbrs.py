"""f-BRS: network, distance maps, transforms, predictor and controller.

Equivalence with the original (formula weights and the original code's outputs) is marked ``reference``;
loading, weight-folding, distance-map edge cases and the controller's undo run on seeded weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from model.factory import load_fbrs
from model.fbrs import build_fbrs_model, click_distance_maps
from tests.helpers_weights import seeded_state_dict


@pytest.fixture(scope="module")
def fbrs_state(formula):
    """Formula weights over the full state dict (what the fixtures were produced with)."""
    return formula.formula_state_dict(build_fbrs_model().state_dict())


@pytest.fixture(scope="module")
def fbrs_net(fbrs_state):
    net = build_fbrs_model()
    net.load_state_dict(fbrs_state)
    return net.eval()


@pytest.fixture(scope="module")
def seeded_fbrs(seeded_checkpoints):
    return load_fbrs(seeded_checkpoints["fbrs"])


@pytest.mark.reference
def test_state_dict_keys_match_release(read_keys):
    sd = build_fbrs_model().state_dict()
    mine = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert mine == [tuple(r) for r in read_keys("fbrs")]
    backbone = [k for k in sd if "feature_extractor.backbone" in k and "num_batches_tracked" not in k]
    assert len(backbone) == 275


@pytest.mark.parametrize("drop_nbt", [False, True], ids=["full", "release_without_num_batches_tracked"])
def test_factory_loads_plain_state_dict(tmp_path, drop_nbt):
    sd = {k: v for k, v in seeded_state_dict("fbrs").items() if not (drop_nbt and k.endswith("num_batches_tracked"))}
    path = tmp_path / "fbrs.pth"
    torch.save(sd, path)
    net = load_fbrs(path)
    assert not net.training
    loaded = net.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    assert all(not p.requires_grad for p in net.parameters())


@pytest.mark.reference
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


def test_distance_maps_seeds_outside_image():
    """As the original BFS: a seed outside the image counts only when 4-adjacent to it."""
    def layer0(r, c):
        return click_distance_maps(torch.tensor([[[r, c], [-1.0, -1.0]]]), 60, 80, 260.0)[0, 0]
    assert layer0(10.0, 80.0)[10, 79] == pytest.approx((1 / 260) ** 2)  # col == W: spreads
    assert layer0(60.0, 5.0)[59, 5] == pytest.approx((1 / 260) ** 2)  # row == H: spreads
    assert torch.all(layer0(10.0, 85.0) == 1e6)  # further out: never reached
    assert torch.all(layer0(60.0, 80.0) == 1e6)  # diagonal corner: no in-image neighbour
    assert torch.all(layer0(-3.0, 5.0) == 1e6)  # negative row: unused


@pytest.mark.reference
@pytest.mark.parametrize("folded", [True, False], ids=["bn_folded_inference", "plain_modules"])
def test_network_matches_original(fbrs_net, load_fixture, folded):
    z = load_fixture("fbrs")
    image, points = torch.from_numpy(z["image_norm"]), torch.from_numpy(z["net_points"])
    with torch.no_grad():
        coord = fbrs_net.dist_maps(image, points)
        logits = fbrs_net(image, points, folded=folded)["instances"]
    assert np.abs(coord.numpy() - z["net_coord_features"]).max() <= 1e-6
    assert logits.shape == (1, 1, 240, 320)
    assert np.abs(logits.numpy() - z["net_instances_logits"]).max() <= 1e-4


def test_folded_copy_follows_weight_changes(seeded_fbrs):
    """The BN-folded inference copy is rebuilt when the weights are reloaded: after a reload the
    folded path gives what the plain modules give with the new weights."""
    g = torch.Generator().manual_seed(4)
    image = torch.randn(1, 3, 64, 96, generator=g)
    points = torch.tensor([[[20.0, 30.0], [-1.0, -1.0], [40.0, 70.0], [-1.0, -1.0]]])
    net = build_fbrs_model().eval()
    with torch.no_grad():
        before = net(image, points, folded=True)["instances"]  # folds the random initial weights
        net.load_state_dict(seeded_fbrs.state_dict())
        folded = net(image, points, folded=True)["instances"]
        plain = seeded_fbrs(image, points)["instances"]
    # folding batch norm into the convolutions changes only the float32 rounding (on seeded weights the
    # 50 layers amplify it to 2e-5 of the largest logit on an AVX-512 CPU without AMX)
    tolerance = 1e-4 * plain.abs().max().item() + 1e-4
    assert (folded - plain).abs().max().item() <= tolerance
    assert (before - plain).abs().max().item() > 100 * tolerance  # the reload did change the output


# ----------------------------------------------------------------------------- transforms
from types import SimpleNamespace  # noqa: E402

from inference_core.fbrs import Click, Clicker, ZoomIn, build_fbrs_b_predictor  # noqa: E402
from inference_core.interaction.fbrs_controller import FBRS_PREDICTOR_PARAMS, FBRSController  # noqa: E402


def _clicks(rows_cols_pos) -> list[Click]:
    return [Click(bool(p), (float(r), float(c))) for r, c, p in rows_cols_pos]


@pytest.mark.reference
def test_zoom_in_alone(load_fixture):
    z = load_fixture("fbrs")
    zoom = ZoomIn(skip_clicks=1, target_size=480, expansion_ratio=1.4)
    zoom.reset()
    zoom._prev_probs = z["zoom_prev_probs"]
    roi_image, clicks_lists = zoom.transform(torch.from_numpy(z["image_norm"]), [_clicks(z["zoom_clicks_in"])])
    assert zoom._object_roi == tuple(z["zoom_roi"].tolist())
    assert tuple(roi_image.shape) == tuple(z["zoom_roi_image_shape"].tolist())
    assert np.abs(roi_image[:, :, ::4, ::4].numpy() - z["zoom_roi_image_sub4"]).max() <= 1e-5
    out = np.array([[c.coords[0], c.coords[1], c.is_positive] for c in clicks_lists[0]], dtype=np.float64)
    assert np.abs(out - z["zoom_clicks_out"]).max() <= 1e-9
    hr, wr = roi_image.shape[2:]
    rp = torch.sigmoid(torch.linspace(-3, 3, wr).view(1, 1, 1, -1) + torch.linspace(-2, 2, hr).view(1, 1, -1, 1))
    inv = zoom.inv_transform(rp)
    assert np.abs(inv.numpy() - z["zoom_inv_out"]).max() <= 1e-6


def _fake_network_logits(clicks_lists, h: int, w: int) -> torch.Tensor:
    """A closed-form stand-in for the network, the same one the fixture's chain was recorded with:
    logits fall linearly with the distance to the nearest positive click (4 at the click, 0 at 12 % of the
    longer side) minus 6·exp(−(d / 4 % of the longer side)²) for the nearest negative click at distance d;
    float64 distances, float32 result."""
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    scale = max(h, w)
    out = []
    for clicks in clicks_lists:
        def nearest(sel):
            pts = [c.coords for c in clicks if c.is_positive == sel]
            if not pts:
                return None
            return np.min([np.sqrt((rr - r) ** 2 + (cc - c) ** 2) for r, c in pts], axis=0)
        dpos, dneg = nearest(True), nearest(False)
        logits = np.full((h, w), -4.0) if dpos is None else 4 * (1 - dpos / (0.12 * scale))
        if dneg is not None:
            logits = logits - 6 * np.exp(-(dneg / (0.04 * scale)) ** 2)
        out.append(logits.astype(np.float32)[None])
    return torch.from_numpy(np.stack(out))


@pytest.mark.reference
def test_transform_chain_with_fake_network(load_fixture):
    z = load_fixture("fbrs")
    stub = SimpleNamespace(feature_extractor=SimpleNamespace(ch=128))
    predictor = build_fbrs_b_predictor(stub, "cpu", **FBRS_PREDICTOR_PARAMS)
    shapes = []

    def fake(image_nd, clicks_lists, is_image_changed):
        shapes.append(tuple(image_nd.shape))
        return _fake_network_logits(clicks_lists, image_nd.shape[2], image_nd.shape[3])

    predictor._get_prediction = fake
    predictor.set_input_image(torch.zeros(1, 3, 480, 864))
    clicker = Clicker()
    for i, click in enumerate(_clicks(z["chain_clicks_rc_ispos"])):
        clicker.add_click(click)
        probs = predictor.get_prediction(clicker)
        assert probs.shape == (1, 1, 480, 864)
        assert np.abs(probs.numpy() - z["chain_probs"][i]).max() <= 1e-5, f"click {i + 1}"
    assert shapes == [(2, 3, 444, 800), (2, 3, 480, 480), (2, 3, 480, 480)]


# ----------------------------------------------------------------------------- controller
@pytest.fixture(scope="module")
def controller_run(fbrs_net, load_fixture):
    """The three fixture clicks through FBRSController; per click: probs, mask, opt_data, points."""
    z = load_fixture("fbrs")
    ctrl = FBRSController(fbrs_net, device="cpu")
    image = torch.from_numpy(z["image_norm"])
    steps = []
    for x, y, positive in z["ctrl_clicks_xy_ispos"]:
        mask = ctrl.interact(image, float(x), float(y), bool(positive))
        steps.append({"mask": mask.numpy(), "probs": ctrl.probs.numpy(),
                      "opt_data": np.asarray(ctrl.predictor.opt_data, dtype=np.float32),
                      "points": ctrl.predictor.last_points_nd.numpy(), "lbfgs": ctrl.predictor.last_lbfgs})
    return ctrl, steps


@pytest.mark.reference
@pytest.mark.parametrize("click", [0, 1, 2])
def test_controller_matches_original(controller_run, load_fixture, click):
    z = load_fixture("fbrs")
    _, steps = controller_run
    step = steps[click]
    assert step["mask"].shape == (1, 1, 240, 320)
    assert np.abs(step["probs"] - z["ctrl_probs"][click]).max() <= 1e-5
    ref_mask = z["ctrl_masks"][click].astype(bool)
    mine = step["mask"] > 0.5
    assert (mine & ref_mask).sum() / (mine | ref_mask).sum() >= 0.99
    assert np.abs(step["opt_data"] - z["ctrl_opt_data"][click]).max() <= 1e-5
    ref_points = z[f"ctrl_points_nd_click{click + 1}"]
    assert step["points"].shape == ref_points.shape
    assert np.abs(step["points"] - ref_points).max() <= 1e-4
    lbfgs = json_meta(z)["controller"]["clicks"][click]["lbfgs"]
    if lbfgs:
        assert step["lbfgs"]["funcalls"] == lbfgs[0]["funcalls"]


def json_meta(z) -> dict:
    import json
    return json.loads(str(z["meta"]))


def test_controller_undo_restores_previous_click(seeded_fbrs, monkeypatch):
    """Undo goes back click by click (mask, probabilities, BRS scale/bias), and redoing a click gives
    exactly the first result: the clicker, the transforms and the L-BFGS start are restored."""
    import inference_core.interaction.fbrs_controller as fbrs_controller
    # zoom the second click's region to 128 pixels instead of 480: the same code path, 14× fewer pixels
    params = {**FBRS_PREDICTOR_PARAMS, "zoom_in_params": {**FBRS_PREDICTOR_PARAMS["zoom_in_params"], "target_size": 128}}
    monkeypatch.setattr(fbrs_controller, "FBRS_PREDICTOR_PARAMS", params)
    ctrl = FBRSController(seeded_fbrs, device="cpu")
    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    clicks = [(40.0, 30.0, True), (90.0, 60.0, False)]  # (x, y, positive); the second one is zoomed in
    steps = []
    for x, y, positive in clicks:
        mask = ctrl.interact(image, x, y, positive)
        steps.append({"mask": mask.clone(), "probs": ctrl.probs.clone(),
                      "opt_data": np.array(ctrl.predictor.opt_data, dtype=np.float32)})
    assert ctrl.num_clicks == 2 and steps[0]["mask"].shape == (1, 1, 96, 128)
    assert not torch.equal(steps[0]["probs"], steps[1]["probs"])

    mask = ctrl.undo()
    assert ctrl.num_clicks == 1 and torch.equal(mask, steps[0]["mask"])
    assert torch.equal(ctrl.probs, steps[0]["probs"])
    assert not np.asarray(ctrl.predictor.opt_data).any()  # scale/bias back to the click-1 state
    again = ctrl.interact(image, *clicks[1][:2], clicks[1][2])
    assert torch.equal(again, steps[1]["mask"]) and torch.equal(ctrl.probs, steps[1]["probs"])
    assert np.array_equal(np.asarray(ctrl.predictor.opt_data, dtype=np.float32), steps[1]["opt_data"])
    while ctrl.num_clicks:
        last = ctrl.undo()
    assert last is None and ctrl.probs is None
    assert ctrl.undo() is None  # nothing left: harmless


@pytest.mark.reference
def test_fast_controller_stays_close_to_original(fbrs_net, load_fixture):
    """The fast path (BN-folded features) is not bitwise, but its masks stay those of the original."""
    z = load_fixture("fbrs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "bf16 is emulated here": f-BRS never computes in bf16
        ctrl = FBRSController(fbrs_net, device="cpu", precision="bfloat16")
    assert ctrl.predictor is None and ctrl.precision == "bfloat16"
    image = torch.from_numpy(z["image_norm"])
    for click, (x, y, positive) in enumerate(z["ctrl_clicks_xy_ispos"]):
        mine = ctrl.interact(image, float(x), float(y), bool(positive)).numpy() > 0.5
        assert ctrl.predictor.folded_features
        ref = z["ctrl_masks"][click].astype(bool)
        assert (mine & ref).sum() / (mine | ref).sum() >= 0.98, f"click {click + 1}"
