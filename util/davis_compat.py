"""Runtime compatibility for ``davisinteractive==1.0.4`` on numpy 2 / networkx 3 / pandas ≥2 / scikit-image ≥0.19.

Import this module before anything from ``davisinteractive`` (importing it applies the shim). The package itself is
used unmodified; each of the six patches below (listed in docs/ORIGINAL.md) is guarded and is a no-op where the
installed stack does not need it:

1. ``np.int`` / ``np.float`` / ``np.bool`` aliases (numpy ≥1.24 removed them; the package uses them everywhere).
2. ``np.trapz`` (numpy 2.4 removed it; the AUC in ``EvaluationService.summarize_report`` uses it).
3. ``np.NPY_OWNDATA`` (looked up at run time by the Cython RLE decoder of the remote connector).
4. ``nx.from_scipy_sparse_matrix`` (networkx 3 removed it; the robot's ``_mask2graph`` uses it).
5. ``EvaluationService.summarize_report`` gets a typed report (pandas ≥2 ``groupby().mean()`` no longer skips the
   string ``session_id`` column; pandas 3 builds the report with every column as object dtype).
6. The robot's ``medial_axis`` breaks ties with ``RandomState(0)`` again (scikit-image ≥0.19 uses an unseeded
   ``default_rng``, which made the official robot's scribbles differ from run to run).

It also offers what an offline evaluation on DAVIS-layout data needs: :func:`register_sequences` (make sequences the
package does not know evaluable, never downloading anything), :func:`block_downloads` (a missing file becomes a
:class:`DavisDataMissingError` naming it) and :func:`preserved_davis_state` (restore the process-global
``Davis.dataset`` / ``Davis.sets`` from deep copies, so tests do not leak state).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

__all__ = ["apply", "applied_items", "DavisDataMissingError", "block_downloads", "register_sequences",
           "snapshot_davis_state", "restore_davis_state", "preserved_davis_state", "sequence_meta_from_disk", "load_meta",
           "SEQUENCE_KEYS"]

# keys of one sequence entry in Davis.dataset that the evaluator reads
SEQUENCE_KEYS = ("num_frames", "num_objects", "num_scribbles", "image_size")

_APPLIED: dict[str, bool] = {}


class DavisDataMissingError(FileNotFoundError):
    """A file the DAVIS evaluator needs is missing; offline we never download, so we name it instead."""


# ---------------------------------------------------------------------------------------------------------------
# items 1-4: module attributes
# ---------------------------------------------------------------------------------------------------------------
def _patch_numpy() -> dict[str, bool]:
    done = {}
    # patch 1 (numpy aliases): set each alias only when missing (numpy 2 has np.bool again, keep numpy's own)
    added = False
    for name, typ in (("int", int), ("float", float), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, typ)
            added = True
    done["numpy_aliases"] = added
    # patch 2: np.trapz
    done["trapz"] = False
    if not hasattr(np, "trapz") and hasattr(np, "trapezoid"):
        np.trapz = np.trapezoid
        done["trapz"] = True
    # patch 3 (np.NPY_OWNDATA): the value numpy 1.x exported (NPY_ARRAY_OWNDATA)
    done["npy_owndata"] = False
    if not hasattr(np, "NPY_OWNDATA"):
        np.NPY_OWNDATA = 4
        done["npy_owndata"] = True
    return done


def _patch_networkx() -> bool:
    import networkx as nx
    if hasattr(nx, "from_scipy_sparse_matrix"):
        return False
    nx.from_scipy_sparse_matrix = nx.from_scipy_sparse_array
    return True


# ---------------------------------------------------------------------------------------------------------------
# patch 5: typed report for summarize_report
# ---------------------------------------------------------------------------------------------------------------
_FLOAT_COLUMNS = ("jaccard", "contour", "j_and_f", "timing")
_INT_COLUMNS = ("scribble_idx", "interaction", "object_id", "frame")


def _typed_report(df):
    """Drop ``session_id`` and give the metric/timing columns float64 and the id columns int64 dtype."""
    df = df.drop(columns="session_id", errors="ignore")
    casts = {c: "float64" for c in _FLOAT_COLUMNS if c in df.columns}
    casts.update({c: "int64" for c in _INT_COLUMNS if c in df.columns})
    return df.astype(casts)


def _patch_summarize_report() -> bool:
    try:
        from davisinteractive.evaluation.service import EvaluationService
    except ImportError:  # package absent: nothing to patch (scripts that need it report that themselves)
        return False
    original = EvaluationService.summarize_report
    if getattr(original, "_davis_compat", False):
        return False

    @functools.wraps(original)
    def summarize_report(self, df):
        return original(self, _typed_report(df))

    summarize_report._davis_compat = True
    EvaluationService.summarize_report = summarize_report
    return True


# ---------------------------------------------------------------------------------------------------------------
# patch 6: deterministic medial_axis tie-break in the robot
# ---------------------------------------------------------------------------------------------------------------
class _LegacyTieBreakGenerator(np.random.Generator):
    """A Generator whose ``permutation`` is ``RandomState(0).permutation``: the tie-break of scikit-image < 0.19.

    ``np.random.default_rng(g)`` returns ``g`` unchanged, so ``medial_axis`` uses this permutation. A fresh
    ``RandomState(0)`` per call makes every skeleton independent of what ran before.
    """

    def permutation(self, x, axis=0):  # noqa: D102 (same signature as Generator.permutation)
        return np.random.RandomState(0).permutation(x)


def _deterministic_medial_axis(medial_axis, rng_keyword: str):
    @functools.wraps(medial_axis)
    def wrapper(image, mask=None, return_distance=False, **kwargs):
        kwargs.setdefault(rng_keyword, _LegacyTieBreakGenerator(np.random.PCG64(0)))
        return medial_axis(image, mask=mask, return_distance=return_distance, **kwargs)

    wrapper._davis_compat = True
    return wrapper


def _patch_robot() -> bool:
    try:
        from davisinteractive.robot import interactive_robot
    except ImportError:
        return False
    current = interactive_robot.medial_axis
    if getattr(current, "_davis_compat", False):
        return False
    params = inspect.signature(current).parameters
    # scikit-image 0.19-0.20 call it random_state, later versions rng; before 0.19 it was already seeded
    keyword = "rng" if "rng" in params else "random_state" if "random_state" in params else None
    if keyword is None:
        return False
    interactive_robot.medial_axis = _deterministic_medial_axis(current, keyword)
    return True


def apply() -> dict[str, bool]:
    """Apply the six items (idempotent). Returns ``{item: True if this stack needed it}`` from the first call."""
    if _APPLIED:
        return dict(_APPLIED)
    result = _patch_numpy()
    result["networkx"] = _patch_networkx()
    # the numpy aliases must exist before davisinteractive is imported
    result["summarize_report"] = _patch_summarize_report()
    result["robot_medial_axis"] = _patch_robot()
    _APPLIED.update(result)
    return dict(result)


def applied_items() -> dict[str, bool]:
    """Which items the shim found necessary on this stack (empty before :func:`apply`)."""
    return dict(_APPLIED)


# ---------------------------------------------------------------------------------------------------------------
# offline data: no downloads, registration of unknown sequences, state restoration
# ---------------------------------------------------------------------------------------------------------------
def _davis_class():
    from davisinteractive.dataset.davis import Davis
    return Davis


def _first_missing(davis_root: Path, sequences: list[str], kind: str) -> Path | None:
    """The first file of ``kind`` ('scribbles' or 'annotations') that ``Davis.check_files`` would miss."""
    Davis = _davis_class()
    for seq in sequences:
        info = Davis.dataset.get(seq, {})
        if kind == "scribbles":
            paths = [davis_root / Davis.SCRIBBLES_SUBDIR / seq / f"{i:03d}.json"
                     for i in range(1, int(info.get("num_scribbles", 0)) + 1)]
        else:
            paths = [davis_root / Davis.ANNOTATIONS_SUBDIR / Davis.RESOLUTION / seq / f"{i:05d}.png"
                     for i in range(int(info.get("num_frames", 0)))]
        for p in paths:
            if not p.exists():
                return p
    return None


def _raise_missing(kind: str):
    def _no_download(self) -> None:
        root = Path(str(self.davis_root))
        missing = _first_missing(root, list(getattr(self, "_compat_checked_sequences", [])), kind)
        where = str(missing) if missing is not None else f"{kind} under {root}"
        raise DavisDataMissingError(
            f"{where}: missing DAVIS {kind} file; downloads are disabled (offline): "
            f"point --davis at a complete DAVIS-layout root or regenerate the synthetic set")

    _no_download._davis_compat = True
    return _no_download


def block_downloads() -> None:
    """Make ``Davis.check_files`` raise :class:`DavisDataMissingError` naming the missing file instead of downloading.

    ``check_files`` itself is kept; it is only wrapped to remember which sequences it checks, so the blocked
    download functions can name the first missing file.
    """
    Davis = _davis_class()
    if not getattr(Davis._download_scribbles, "_davis_compat", False):
        Davis._download_scribbles = _raise_missing("scribbles")
    if not getattr(Davis._download_annotations, "_davis_compat", False):
        Davis._download_annotations = _raise_missing("annotations")
    if not getattr(Davis.check_files, "_davis_compat", False):
        original = Davis.check_files

        @functools.wraps(original)
        def check_files(self, sequences):
            self._compat_checked_sequences = list(sequences)
            return original(self, sequences)

        check_files._davis_compat = True
        Davis.check_files = check_files


def _validate_entry(seq: str, info: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in SEQUENCE_KEYS if k not in info]
    if missing:
        raise ValueError(f"sequence {seq!r}: metadata lacks {missing}; need {list(SEQUENCE_KEYS)}")
    entry = {k: info[k] for k in info}
    entry["num_frames"] = int(info["num_frames"])
    entry["num_objects"] = int(info["num_objects"])
    entry["num_scribbles"] = int(info["num_scribbles"])
    w, h = (int(v) for v in info["image_size"])
    entry["image_size"] = [w, h]
    if entry["num_frames"] < 1 or entry["num_objects"] < 1 or entry["num_scribbles"] < 1:
        raise ValueError(f"sequence {seq!r}: num_frames, num_objects and num_scribbles must be >= 1, got "
                         f"{entry['num_frames']}, {entry['num_objects']}, {entry['num_scribbles']}")
    entry.setdefault("name", seq)
    return entry


def register_sequences(meta: Mapping[str, Mapping[str, Any]], subset: str = "val", *,
                       replace_subset: bool = True, no_downloads: bool = True) -> list[str]:
    """Make ``meta``'s sequences evaluable by ``DavisInteractiveSession(subset=subset)``.

    ``meta``: ``{seq: {num_frames, num_objects, num_scribbles, image_size [W, H]}}`` (e.g. ``synthetic_meta.json``).
    Updates ``Davis.dataset`` and sets ``Davis.sets[subset]`` to the sorted names (``replace_subset=False`` appends
    instead). ``subset`` must be ``val`` or ``train``: the package builds ``trainval`` once at import.
    Returns the sequence list of ``subset``. Use inside :func:`preserved_davis_state` to undo it.
    """
    if subset not in ("val", "train"):
        raise ValueError(f"subset={subset!r}: only 'val' or 'train' can be registered (trainval is fixed at import)")
    Davis = _davis_class()
    entries = {seq: _validate_entry(seq, info) for seq, info in meta.items()}
    for seq, entry in entries.items():
        entry["set"] = subset
    Davis.dataset.update(entries)
    names = sorted(entries)
    if replace_subset:
        Davis.sets[subset] = names
    else:
        Davis.sets[subset] = list(Davis.sets[subset]) + [n for n in names if n not in Davis.sets[subset]]
    if no_downloads:
        block_downloads()
    return list(Davis.sets[subset])


DavisState = dict  # {"dataset_obj", "sets_obj", "dataset", "sets", "functions"}: see snapshot_davis_state


def snapshot_davis_state() -> DavisState:
    """Deep copies of ``Davis.dataset`` and ``Davis.sets`` and the download/check functions."""
    Davis = _davis_class()
    return {
        "dataset_obj": Davis.dataset, "sets_obj": Davis.sets,
        "dataset": copy.deepcopy(dict(Davis.dataset)), "sets": copy.deepcopy(dict(Davis.sets)),
        "functions": {name: Davis.__dict__[name] for name in
                      ("_download_scribbles", "_download_annotations", "check_files")},
    }


def restore_davis_state(state: DavisState) -> None:
    """Put back what :func:`snapshot_davis_state` saved, in place (other modules hold the same dict objects)."""
    Davis = _davis_class()
    dataset, sets = state["dataset_obj"], state["sets_obj"]
    dataset.clear()
    dataset.update(copy.deepcopy(state["dataset"]))
    sets.clear()
    sets.update(copy.deepcopy(state["sets"]))
    Davis.dataset, Davis.sets = dataset, sets
    for name, fn in state["functions"].items():
        setattr(Davis, name, fn)


@contextlib.contextmanager
def preserved_davis_state(meta: Mapping[str, Mapping[str, Any]] | None = None,
                          subset: str = "val") -> Iterator[list[str] | None]:
    """Context manager: snapshot the Davis tables, optionally :func:`register_sequences` ``meta``, restore on exit.

    Yields the registered subset's sequence list (``None`` without ``meta``).
    """
    state = snapshot_davis_state()
    try:
        yield register_sequences(meta, subset) if meta is not None else None
    finally:
        restore_davis_state(state)


def sequence_meta_from_disk(davis_root: str | os.PathLike, sequence: str) -> dict[str, Any]:
    """Metadata of one DAVIS-layout sequence read from disk (for sequences the package does not know).

    ``num_frames``: consecutive ``Annotations/480p/<seq>/00000.png...``; ``num_objects``: the largest id in frame 0
    (as MiVOS counts objects; 255 = void is ignored); ``image_size``: frame 0's ``[W, H]``; ``num_scribbles``:
    consecutive ``Scribbles/<seq>/001.json...``. Raises :class:`DavisDataMissingError` naming what is missing.
    """
    from PIL import Image

    root = Path(davis_root)
    ann_dir = root / "Annotations" / "480p" / sequence
    first = ann_dir / "00000.png"
    if not first.is_file():
        raise DavisDataMissingError(f"{first}: missing first annotation of sequence {sequence!r}")
    num_frames = 0
    while (ann_dir / f"{num_frames:05d}.png").is_file():
        num_frames += 1
    with Image.open(first) as im:
        labels = np.asarray(im)
    if labels.ndim != 2:
        raise ValueError(f"{first}: annotation must be a palette/grey PNG (2-D), got shape {labels.shape}")
    ids = labels[labels != 255]
    num_objects = int(ids.max()) if ids.size else 0
    if num_objects < 1:
        raise ValueError(f"{first}: no object in the first frame of {sequence!r} (ids 1..K expected)")
    num_scribbles = 0
    while (root / "Scribbles" / sequence / f"{num_scribbles + 1:03d}.json").is_file():
        num_scribbles += 1
    if num_scribbles < 1:
        raise DavisDataMissingError(f"{root / 'Scribbles' / sequence / '001.json'}: missing scribble file")
    return {"num_frames": num_frames, "num_objects": num_objects, "num_scribbles": num_scribbles,
            "image_size": [int(labels.shape[1]), int(labels.shape[0])]}


def load_meta(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a ``synthetic_meta.json``-style file (``{seq: {num_frames, ...}}``)."""
    import json
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DavisDataMissingError(f"{path}: metadata file not found") from None


apply()
