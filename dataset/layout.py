"""One-line errors for missing or malformed dataset folders."""
from __future__ import annotations

import os
from pathlib import Path


class DatasetError(ValueError):
    """Unusable training / test data (one-line message naming the path and the fix)."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A data root does not have the expected layout. The message is one line naming the path and the
    layout that was expected."""


def require_dir(path: str | os.PathLike, what: str, layout: str) -> Path:
    """Return ``path`` if it is a non-empty folder, else raise :class:`DatasetLayoutError`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: {what} not found; expected {layout}")
    if not any(path.iterdir()):
        raise DatasetLayoutError(f"{path}: {what} is empty; expected {layout}")
    return path


def require_file(path: str | os.PathLike, what: str, layout: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: {what} not found; expected {layout}")
    return path


def open_image(path: str | os.PathLike, mode: str):
    """``PIL.Image.open(path).convert(mode)``, decoded now; an unreadable or corrupt file raises
    :class:`DatasetError` naming it (a DataLoader worker's error would otherwise not say which file)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, ValueError, SyntaxError) as e:   # PIL raises SyntaxError for some broken headers
        detail = " ".join(str(e).split())[:120]
        raise DatasetError(f"{path}: cannot read the image ({type(e).__name__}: {detail}); replace or remove "
                           "this file") from None


def read_label_png(path: str | os.PathLike):
    """:func:`util.palette.load_mask_png` with a corrupt file reported as :class:`DatasetError` naming it."""
    from util.palette import load_mask_png
    try:
        return load_mask_png(path)
    except (OSError, ValueError, SyntaxError) as e:
        detail = " ".join(str(e).split())[:120]
        raise DatasetError(f"{path}: cannot read the mask ({type(e).__name__}: {detail}); replace or remove "
                           "this file") from None


def sorted_listdir(path: str | os.PathLike) -> list[str]:
    """``os.listdir`` sorted, without hidden entries (so sampling does not depend on the filesystem's order)."""
    return sorted(n for n in os.listdir(path) if not n.startswith("."))
