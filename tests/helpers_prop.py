"""Helpers for the equivalence tests of the propagation / fusion networks: formula-weight checkpoints
(from the reference folder's ``formula`` module), checkpoint key lists and measured differences.

Behaviour tests use the seeded weights of ``tests/helpers_weights.py`` instead (fixtures
``seeded_checkpoints`` / ``seeded_prop_net`` of ``tests/conftest.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# Measured max abs differences, printed at the end of the run (pytest -s) and attached to the
# JUnit report through ``record_property``.
MEASURED: dict[str, float] = {}


def save_formula_checkpoint(formula, model: torch.nn.Module, path: Path, prefix: str = "") -> Path:
    """Formula weights of ``model`` saved as a plain state dict (the official layout)."""
    sd = formula.formula_state_dict(model.state_dict())
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    return path


def max_abs_diff(name: str, ours: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(np.asarray(ref)).float()
    assert tuple(ours.shape) == tuple(ref_t.shape), f"{name}: shape {tuple(ours.shape)} vs {tuple(ref_t.shape)}"
    d = (ours.detach().float().cpu() - ref_t).abs().max().item()
    MEASURED[name] = d
    print(f"[max abs diff] {name}: {d:.3g}")
    return d


def keys_of(model: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]


# One formula-weight propagation checkpoint and one loaded network per test session (building the
# 53.7M formula weights and loading them takes seconds; the loaded net is frozen and never mutated).
_SESSION_CACHE: dict[str, object] = {}


def propagation_checkpoint(formula, tmp_path_factory) -> Path:
    if "prop_ckpt" not in _SESSION_CACHE:
        from model.propagation.prop_net import PropagationNetwork
        path = tmp_path_factory.mktemp("prop") / "propagation_model.pth"
        _SESSION_CACHE["prop_ckpt"] = save_formula_checkpoint(formula, PropagationNetwork(), path)
    return _SESSION_CACHE["prop_ckpt"]


def propagation_net(formula, tmp_path_factory):
    if "prop_net" not in _SESSION_CACHE:
        from model.factory import load_propagation
        _SESSION_CACHE["prop_net"] = load_propagation(propagation_checkpoint(formula, tmp_path_factory), "cpu")
    return _SESSION_CACHE["prop_net"]
