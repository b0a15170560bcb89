"""BatchNorm folding (model/batchnorm_fold.py) and the allocator settings of util.memory.

Folded inference views compute the same function as the networks they come from (up to float
rounding), leave those networks untouched, follow weight changes, and are what the inference loops
call; huge pages are requested for every process that imports ``util`` unless the user says otherwise.
"""
from __future__ import annotations

import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from model.batchnorm_fold import add_into_first, fold_batchnorm, inference_network
from model.propagation.prop_net import PropagationNetwork
from model.s2m.s2m_network import deeplabv3plus_resnet50

ROOT = Path(__file__).resolve().parents[1]


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters (fresh BN layers are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def prop_net() -> PropagationNetwork:
    torch.manual_seed(0)
    return _randomise_batchnorm(PropagationNetwork()).to(memory_format=torch.channels_last)


def test_fold_batchnorm_same_function_source_untouched():
    torch.manual_seed(1)
    net = _randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                             nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        assert (folded(x) - net(x)).abs().max().item() < 1e-5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(net.train())


class _Residual(nn.Module):
    """conv → BN, plus the input: the residual pattern, and a broadcasting sum that must not go in place."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head, self.head_bn = nn.Conv2d(4, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        out += x                               # traced as out + x
        return self.head_bn(self.head(out)) + out   # 1 channel + 4 channels: a new tensor


def test_folded_residual_sums_go_into_the_convolution_output():
    torch.manual_seed(3)
    net = _randomise_batchnorm(_Residual())
    folded = fold_batchnorm(net)
    targets = [n.target for n in folded.graph.nodes if n.op == "call_function"]
    assert targets.count(add_into_first) == 2 and operator.add not in targets
    x = torch.randn(2, 4, 10, 12)
    with torch.no_grad():
        assert (folded(x) - net(x)).abs().max().item() < 1e-5
    fresh = torch.ones(1, 3)
    assert add_into_first(fresh, torch.ones(2, 3)).shape == (2, 3) and fresh.sum() == 3     # broadcast: new
    half = torch.ones(3, dtype=torch.bfloat16)
    assert add_into_first(half, torch.ones(3)).dtype == torch.float32 and half.sum() == 3   # promoted: new
    assert add_into_first(fresh, torch.ones(1, 3)) is fresh and fresh.sum() == 6            # in place


def test_propagation_view_matches_and_shares(prop_net):
    view = inference_network(prop_net)
    assert view is not prop_net and view is inference_network(prop_net)     # cached
    assert view.decoder is prop_net.decoder and view.kv_m_f16 is prop_net.kv_m_f16
    assert isinstance(prop_net.mask_rgb_encoder.bn1, nn.BatchNorm2d)       # the network keeps its BNs
    assert view.mask_rgb_encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(2)
    frame, masks = torch.randn(1, 3, 64, 96), torch.rand(2, 1, 64, 96)
    with torch.inference_mode():
        for ours, ref in zip(view.memorize(frame, masks), prop_net.memorize(frame, masks)):
            assert (ours - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
        for ours, ref in zip(view.get_query_features(frame), prop_net.get_query_features(frame)):
            assert (ours - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_view_follows_weight_changes(prop_net):
    net = PropagationNetwork().eval()
    view = inference_network(net)
    net.load_state_dict(prop_net.state_dict())           # new weights: the old view is stale
    fresh = inference_network(net)
    assert fresh is not view
    frame = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        ours, ref = fresh.get_query_features(frame)[0], prop_net.get_query_features(frame)[0]
    assert (ours - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_training_and_foreign_networks_run_as_they_are(prop_net):
    net = PropagationNetwork().train()
    assert inference_network(net) is net
    stub = nn.Conv2d(1, 1, 1).eval()                     # no folded view on offer
    assert inference_network(stub) is stub


def test_s2m_view_matches():
    torch.manual_seed(3)
    net = _randomise_batchnorm(deeplabv3plus_resnet50())
    view = inference_network(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in view.modules())
    x = torch.randn(2, 6, 64, 64)
    with torch.inference_mode():
        ours, ref = view(x), net(x)
    assert ours.shape == ref.shape == (2, 1, 64, 64)
    assert (ours - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


def _huge_pages_in_child(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    code = ("import util, torch\nfrom util.memory import huge_pages_active\n"
            "print(huge_pages_active(), __import__('os').environ['THP_MEM_ALLOC_ENABLE'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-1000:]
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages: PyTorch's Linux allocator path")
def test_huge_pages_requested_unless_the_user_says_no():
    assert _huge_pages_in_child(None) == "True 1"        # importing util asks for them
    assert _huge_pages_in_child("0") == "False 0"        # the user's choice wins
