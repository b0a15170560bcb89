"""FusionNet: checkpoint keys and equivalence with the original (formula weights, reference folder)."""
from __future__ import annotations

import pytest
import torch

from model.factory import load_fusion
from model.fusion_net import FusionNet
from tests.helpers_prop import keys_of, max_abs_diff, save_formula_checkpoint

TOL = 1e-4


@pytest.mark.reference
def test_state_dict_matches_official_keys(read_keys):
    net = FusionNet()
    assert keys_of(net) == read_keys("fusion")
    assert sum(p.numel() for p in net.parameters()) == 39905


@pytest.mark.reference
@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("case", ["", "b_"])
def test_matches_original(formula, load_fixture, tmp_path, prefix, case, record_property):
    net = load_fusion(save_formula_checkpoint(formula, FusionNet(), tmp_path / "fusion.pth", prefix), "cpu")
    z = load_fixture("fusion")
    args = [torch.from_numpy(z[case + n]) for n in ("im", "seg1", "seg2", "attn", "time")]
    with torch.inference_mode():
        out = net(*args)
    d = max_abs_diff(f"fusion.{case}out{' (module.)' if prefix else ''}", out, z[case + "out"])
    record_property(f"{case}out", d)
    assert d <= TOL
