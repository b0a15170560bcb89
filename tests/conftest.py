"""Shared test fixtures.

Two kinds of weights:

- seeded weights (``seeded_checkpoints``, ``seeded_prop_net``): built here from a fixed seed, official
  checkpoint layout, no segmentation quality. Every test that checks behaviour uses them and runs from a
  bare clone.
- formula weights and the original code's outputs (``reference_dir``, ``formula``, ``load_fixture``,
  ``read_keys``): read from the reference folder (``MIVOS_REFERENCE``, default ``../shared/reference``
  beside the checkout). Only equivalence tests use them; they are marked ``reference`` and skip with
  one clear reason when the folder is absent.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
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

from tests.helpers_weights import SeededCheckpoints  # noqa: E402

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
        pytest.skip("equivalence test: the reference folder (formula weights and outputs of the original MiVOS "
                    "code) is absent at ../shared/reference; set MIVOS_REFERENCE to its path to run it")
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


@pytest.fixture(scope="session")
def seeded_checkpoints(tmp_path_factory) -> SeededCheckpoints:
    """Seeded weights of every network as plain state dicts (``seeded_checkpoints["propagation_model"]``,
    ``["fusion"]``, ``["s2m"]``, ``["fbrs"]``), written once per session on first use."""
    return SeededCheckpoints(tmp_path_factory.mktemp("seeded_weights"))


@pytest.fixture(scope="session")
def seeded_prop_net(seeded_checkpoints) -> torch.nn.Module:
    """The propagation network with seeded weights, loaded once per session through the factory, in the
    channels_last layout that InferenceCore gives it anyway (so a core built on it changes nothing and
    the results do not depend on the order of the tests). Shared: never modify it; a test that needs
    another layout or trains loads its own copy from ``seeded_checkpoints``."""
    from model.factory import load_propagation
    return load_propagation(seeded_checkpoints["propagation_model"], "cpu").to(memory_format=torch.channels_last)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only equivalence tests may read the reference folder, so that ``-m "not reference"`` runs everything
    else from a bare clone. A test that needs the folder without the ``reference`` marker gets the marker
    here (before ``-m`` selects), and a warning names it: mark it, or move it to seeded weights."""
    unmarked = [item for item in items if "reference_dir" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("reference") is None]
    for item in unmarked:
        item.add_marker(pytest.mark.reference)
    if unmarked:
        names = ", ".join(item.nodeid for item in unmarked[:5]) + (" …" if len(unmarked) > 5 else "")
        warnings.warn(pytest.PytestWarning(f"{len(unmarked)} test(s) read the reference folder without the "
                                           f"reference marker (treated as reference): {names}"))
