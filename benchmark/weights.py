"""The benchmark's checkpoints: written once per folder (formula weights or a seeded init), loaded with
:mod:`model.factory` like every other entry point."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from model.factory import load_fbrs, load_fusion, load_propagation, load_s2m


def _build_networks() -> dict[str, Any]:
    """Freshly built (untrained) networks of the four checkpoints, by checkpoint file name."""
    from model.fbrs import build_fbrs_model
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    return {"propagation_model.pth": PropagationNetwork(top_k=50), "fusion.pth": FusionNet(),
            "s2m.pth": deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False),
            "fbrs.pth": build_fbrs_model()}


WEIGHT_FILES = ("propagation_model.pth", "fusion.pth", "s2m.pth", "fbrs.pth")
WEIGHTS_MARKER = "benchmark_weights.json"


def write_weights(reference: Path | None, out_dir: Path, seed: int) -> tuple[str, str]:
    """Save the four checkpoints into ``out_dir``: the formula weights of ``reference/formula_weights.py``
    (deterministic weights the original code's outputs were recorded with), or a seeded random init when
    ``reference`` is None or lacks that file. Returns (kind, note). A folder already holding the weights
    of the same kind and seed (``--weights``) is reused as is."""
    formula_file = reference / "formula_weights.py" if reference is not None else None
    has_formula = formula_file is not None and formula_file.is_file()
    wanted = {"kind": "formula" if has_formula else "random", "seed": seed}
    marker = out_dir / WEIGHTS_MARKER
    if marker.is_file() and all((out_dir / f).is_file() for f in WEIGHT_FILES):
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            return saved["kind"], saved["note"] + f" (reused from {out_dir})"
    formula = None
    if has_formula:
        spec = importlib.util.spec_from_file_location("formula_weights", formula_file)
        formula = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(formula)
        kind, note = "formula", f"formula weights from {formula_file}"
    else:
        kind = "random"
        where = f"{formula_file} not found" if formula_file is not None else "no --reference folder"
        note = (f"{where}: seeded random weights (seed {seed}); timings are comparable, agreements are not "
                f"those of the formula weights (pass --reference DIR or set MIVOS_REFERENCE)")
        warnings.warn(note)
    torch.manual_seed(seed)
    for name, net in _build_networks().items():
        state = formula.formula_state_dict(net.state_dict()) if formula is not None else net.state_dict()
        torch.save(state, out_dir / name)
    marker.write_text(json.dumps(dict(wanted, note=note)))
    return kind, note


def load_networks(weights: Path, device: str) -> dict[str, Any]:
    """The four networks from ``weights`` through :mod:`model.factory` (eval mode, on ``device``)."""
    return {"prop": load_propagation(weights / "propagation_model.pth", device),
            "fusion": load_fusion(weights / "fusion.pth", device),
            "s2m": load_s2m(weights / "s2m.pth", device),
            "fbrs": load_fbrs(weights / "fbrs.pth", device)}

