import pytest
import torch

from model.aggregate import aggregate_sbg, aggregate_wbg

pytestmark = pytest.mark.reference

CASES = {
    "wbg_keepbg": lambda p: aggregate_wbg(p, keep_bg=True),
    "wbg_nobg": lambda p: aggregate_wbg(p, keep_bg=False),
    "wbg_keepbg_hard": lambda p: aggregate_wbg(p, keep_bg=True, hard=True),
    "sbg_keepbg": lambda p: aggregate_sbg(p, keep_bg=True),
    "sbg_keepbg_hard": lambda p: aggregate_sbg(p, keep_bg=True, hard=True),
}


@pytest.mark.parametrize("case", [0, 1, 2])
@pytest.mark.parametrize("variant", sorted(CASES))
def test_aggregate_matches_original(load_fixture, case, variant):
    z = load_fixture("aggregate")
    out = CASES[variant](torch.from_numpy(z[f"c{case}_in"]))
    ref = torch.from_numpy(z[f"c{case}_{variant}"])
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-6
