"""The one checkpoint loader of the project.

Every script, the GUI, the evaluator and the trainers load weights through :func:`load_weights`:
``torch.load(..., map_location="cpu", weights_only=True)``, a ``module.`` prefix (DataParallel /
DDP) stripped, the f-BRS release layout accepted, strict by default, and every failure reported as a
one-line :class:`CheckpointError` that names the file and the fix.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

DOWNLOAD_HINT = "run `python download_model.py` to fetch the official weights into saves/"
# the files download_model.py writes into saves/: only these may be deleted and fetched again
OFFICIAL_NAMES = ("propagation_model.pth", "fusion.pth", "s2m.pth", "fbrs.pth")


def _broken_file_hint(path: Path) -> str:
    """What to do about an unreadable file: a broken download is deleted and fetched again; any other
    file is the user's, so the hint never says to delete it."""
    if path.name in OFFICIAL_NAMES and path.parent.name == "saves":
        return f"delete it and {DOWNLOAD_HINT}"
    return "check that the path names a .pth checkpoint (the official weights: `python download_model.py`)"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the network. The message is one line."""


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside what ``torch.load`` returned."""
    if isinstance(obj, Mapping):
        # full training checkpoints and some releases nest the weights
        for key in ("network", "state_dict", "model_state", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"{path}: not a checkpoint of network weights (no tensors found); {DOWNLOAD_HINT}")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` (saved from DataParallel/DDP) from every key that has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` dict from ``path`` (CPU, weights only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {DOWNLOAD_HINT}")
    try:
        with warnings.catch_warnings():
            # junk files make the weights-only unpickler warn about pickle protocols before failing
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types (KeyError, UnpicklingError, ...) on junk
        # keep the message one line: the first sentence of the first line of torch's explanation
        text = str(e).strip()
        first = type(e).__name__ + (": " + text.splitlines()[0].split(". ")[0] if text else "")
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a .pth file: {first[:120]}); "
            f"{_broken_file_hint(path)}") from None
    return strip_module_prefix(_unwrap(obj, path))


def _names(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True,
                 ignore_prefixes: tuple[str, ...] = (), what: str | None = None) -> nn.Module:
    """Load ``path`` into ``model`` and return it.

    ``ignore_prefixes``: checkpoint keys starting with these are dropped before loading (e.g. the
    propagation decoder when only the encoders are needed). ``num_batches_tracked`` entries missing
    from the file are tolerated (the f-BRS release was converted from MXNet without them).
    A mismatch raises :class:`CheckpointError` naming the missing and unexpected keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    if ignore_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        kind = what or type(model).__name__
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(unexpected)}")
        raise CheckpointError(f"{path}: does not fit {kind} ({'; '.join(parts)}); is it the right checkpoint?")
    shape_err = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                 if k in own and state[k].shape != own[k].shape]
    if shape_err:
        raise CheckpointError(f"{path}: shape mismatch for {what or type(model).__name__}: "
                              f"{'; '.join(shape_err[:4])}; is it the right checkpoint?")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model
