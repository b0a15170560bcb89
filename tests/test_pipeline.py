"""The inference core end to end against the original's outputs (fixtures/pipeline_visible.npz)."""
import numpy as np
import pytest
import torch

from inference_core import InferenceCore
from model.factory import load_fusion, load_propagation
from util.image_util import images_to_torch

pytestmark = pytest.mark.reference


def rebuild_probs(z):
    """Full ``(K+1)×T×H'×W'`` probabilities after each step (README §4.7)."""
    steps = sorted(int(k[4:-5]) for k in z if k.startswith("step") and k.endswith("_mask"))
    prob, out = None, {}
    for s in steps:
        if f"step{s}_prob" not in z:
            continue
        f = z[f"step{s}_prob_frames"]
        if prob is None:
            prob = z[f"step{s}_prob"].copy()
        else:
            prob[:, f] = z[f"step{s}_prob"]
        out[s] = prob.copy()
    return steps, out


@pytest.fixture(scope="module")
def nets(formula, tmp_path_factory):
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork
    d = tmp_path_factory.mktemp("weights")
    torch.save(formula.formula_state_dict(PropagationNetwork().state_dict()), d / "prop.pth")
    torch.save(formula.formula_state_dict(FusionNet().state_dict()), d / "fusion.pth")
    return load_propagation(d / "prop.pth"), load_fusion(d / "fusion.pth")


@pytest.mark.parametrize("source", ["tensor", "uint8"])
def test_pipeline_visible_matches_original(load_fixture, nets, source):
    z = load_fixture("pipeline_visible")
    frames = z["frames_u8"]
    images = images_to_torch(frames) if source == "tensor" else frames
    k = z["step1_mask"].shape[0] - 1
    core = InferenceCore(*nets, images, k, mem_profile=0, mem_freq=5, device="cpu")
    assert list(core.pad) == list(z["pad"])
    steps, probs = rebuild_probs(z)
    for s in steps:
        mask = torch.from_numpy(z[f"step{s}_mask"])
        idx = int(z[f"step{s}_idx"]) if f"step{s}_idx" in z else {1: 4, 2: 11}[s]
        out = core.interact(mask, idx).copy()
        ref = z[f"step{s}_np_masks"]
        agree = (out == ref).mean()
        prob = core.prob[:, :, 0].numpy()
        diff = np.abs(prob - probs[s]).max()
        print(f"step {s}: pixel agreement {agree:.6f}, prob max abs diff {diff:.2e}")
        assert agree >= 0.999
        assert diff <= 2e-3
