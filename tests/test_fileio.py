"""util.fileio: atomic writes leave the permissions a plain open() would, under any umask."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from util.fileio import atomic_path, atomic_write_bytes, atomic_write_text
from util.palette import save_mask_png


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_all(folder: Path) -> dict[str, Path]:
    """One file per writer that goes through atomic_path."""
    folder.mkdir()
    out = {"bytes": folder / "a.bin", "text": folder / "scores.json", "torch": folder / "ckpt.pth",
           "cv2": folder / "overlay.png", "pil": folder / "im.jpg", "mask": folder / "00000.png"}
    atomic_write_bytes(out["bytes"], b"x")
    atomic_write_text(out["text"], "{}")
    with atomic_path(out["torch"]) as tmp:
        torch.save({"w": torch.zeros(1)}, tmp)
    with atomic_path(out["cv2"]) as tmp:
        assert cv2.imwrite(str(tmp), np.zeros((4, 4, 3), np.uint8))
    with atomic_path(out["pil"]) as tmp:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp, format="JPEG")
    save_mask_png(out["mask"], np.zeros((4, 4), np.uint8))
    return out


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_have_the_mode_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    expected = 0o666 & ~mask
    assert _mode(plain) == expected
    for kind, path in _write_all(tmp_path / "out").items():
        assert _mode(path) == expected, f"{kind}: {oct(_mode(path))} instead of {oct(expected)}"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "no temporary file left"


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "report.csv"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
