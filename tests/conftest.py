"""Shared test fixtures: the reference folder (../shared/reference) and formula weights."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on a loaded 2-core machine spinning threads make torch
# 20-50x slower. Must be set before torch is imported; it changes no numbers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests compare float32 numbers with the fixtures, which were produced with 2 threads.
torch.set_num_threads(2)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _find_reference() -> Path | None:
    env = os.environ.get("MIVOS_REFERENCE")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "reference", ROOT / "shared" / "reference"]
    for c in candidates:
        if (c / "formula_weights.py").is_file():
            return c
    return None


REFERENCE = _find_reference()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if REFERENCE is None:
        pytest.skip("../shared/reference (formula weights + fixtures of the original MiVOS) is absent; "
                    "set MIVOS_REFERENCE to its path to run the equivalence tests")
    return REFERENCE


@pytest.fixture(scope="session")
def formula(reference_dir):
    """The reference's ``formula_weights`` module (``formula_state_dict(model.state_dict())``)."""
    spec = importlib.util.spec_from_file_location("formula_weights", reference_dir / "formula_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_fixture(reference_dir):
    cache: dict[str, dict] = {}

    def _load(name: str) -> dict:
        if name not in cache:
            with np.load(reference_dir / "fixtures" / f"{name}.npz") as z:
                cache[name] = {k: z[k] for k in z.files}
        return cache[name]

    return _load


@pytest.fixture(scope="session")
def read_keys(reference_dir):
    def _read(name: str) -> list[tuple[str, list[int], str]]:
        rows = []
        for line in (reference_dir / "keys" / f"{name}.txt").read_text().splitlines():
            if line.strip():
                k, shape, dtype = line.split("\t")
                rows.append((k, [int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype))
        return rows

    return _read


@pytest.fixture(autouse=True)
def _restore_torch_global_state():
    """Scripts' main() may switch autograd off process-wide (as the original GUI does); tests run
    in one process, so restore the global modes after each test."""
    grad = torch.is_grad_enabled()
    threads = torch.get_num_threads()
    yield
    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)
