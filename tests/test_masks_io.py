"""Mask files are read without losing objects or ids, written in a format that holds them, and objects
get clearly distinct overlay colours."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from util.palette import (DAVIS_PALETTE, load_mask_png, object_colours, read_mask, save_label_png,
                          save_mask_png, srgb_to_lab)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)


def _rgb_mask(h: int = 12, w: int = 16) -> np.ndarray:
    """Blue appears first (row 1), then red, then green; none of them is a DAVIS palette colour."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[1:4, 8:12] = BLUE
    rgb[5:8, 2:6] = RED
    rgb[9:11, 10:14] = GREEN
    return rgb


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


# ------------------------------------------------------------------------------------------ RGB masks

def test_rgb_colours_are_distinct_objects_in_order_of_appearance(tmp_path):
    rgb = _rgb_mask()
    path = _save(tmp_path / "m.png", rgb)
    mf = read_mask(path)
    assert mf.kind == "rgb" and mf.labels.dtype == np.uint8
    assert mf.ids == [1, 2, 3]
    assert mf.colours == {1: BLUE, 2: RED, 3: GREEN}
    assert (mf.labels[rgb.any(-1) == 0] == 0).all()
    for obj, colour in mf.colours.items():
        np.testing.assert_array_equal(mf.labels == obj, (rgb == colour).all(-1))
        assert tuple(mf.palette[obj]) == colour
    # the 8-bit reader every other caller uses sees the same objects (it used to give one object, 255)
    np.testing.assert_array_equal(load_mask_png(path), mf.labels)


def test_rgb_mask_written_back_keeps_its_colours(tmp_path):
    rgb = _rgb_mask()
    mf = read_mask(_save(tmp_path / "m.png", rgb))
    out = tmp_path / "out.png"
    save_label_png(out, mf.labels, mf.palette)
    with Image.open(out) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)
    np.testing.assert_array_equal(load_mask_png(out), mf.labels)


def test_davis_coloured_rgb_mask_keeps_the_davis_ids(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3, 1:3], labels[5:7, 4:8] = 7, 3
    mf = read_mask(_save(tmp_path / "d.png", DAVIS_PALETTE[labels]))
    assert mf.ids == [3, 7]
    np.testing.assert_array_equal(mf.labels, labels)


def test_rgba_transparent_is_background_and_grey_rgb_is_a_label_map(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = 255          # white everywhere, but transparent outside the object
    rgba[2:4, 2:4, 3] = 255
    rgba[2:4, 2:4, :3] = RED
    mf = read_mask(_save(tmp_path / "a.png", rgba))
    assert mf.ids == [1] and (mf.labels > 0).sum() == 4

    grey = np.zeros((6, 6, 3), np.uint8)
    grey[1, 1], grey[4, 4] = 2, 5
    assert read_mask(_save(tmp_path / "g.png", grey)).ids == [2, 5]


def test_too_many_colours_and_lossy_masks_are_refused(tmp_path):
    noisy = np.random.RandomState(0).randint(1, 256, (40, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"distinct colours.*255") as e:
        read_mask(_save(tmp_path / "n.png", noisy))
    assert "\n" not in str(e.value) and "n.png" in str(e.value)
    jpg = tmp_path / "m.jpg"
    Image.fromarray(_rgb_mask()).save(jpg, quality=95)
    with pytest.raises(ValueError, match="JPEG"):
        read_mask(jpg)


# ------------------------------------------------------------------------------------------ 16-bit masks

@pytest.mark.parametrize("ids", [(1000, 2000), (256, 512)])
def test_16bit_ids_are_kept_not_wrapped(tmp_path, ids):
    labels = np.zeros((10, 10), np.uint16)
    labels[1:4, 1:4], labels[6:9, 5:9] = ids
    path = _save(tmp_path / "l16.png", labels)
    mf = read_mask(path)
    assert mf.kind == "grey16" and mf.labels.dtype == np.uint16 and mf.ids == list(ids)
    np.testing.assert_array_equal(mf.labels, labels)
    # the 8-bit reader refuses them in one line instead of wrapping (1000 → 232) or reading "empty"
    with pytest.raises(ValueError, match=f"ids up to {ids[1]}") as e:
        load_mask_png(path)
    assert "\n" not in str(e.value)
    # written back as a 16-bit PNG with the same ids
    out = tmp_path / "out.png"
    save_label_png(out, mf.labels)
    with Image.open(out) as im:
        assert im.mode.startswith("I")
    np.testing.assert_array_equal(read_mask(out).labels, labels)
    lut = mf.colour_lut()
    assert lut.shape == (ids[1] + 1, 3) and (lut[list(ids)] > 0).any(-1).all()


def test_16bit_map_with_small_ids_reads_as_8bit(tmp_path):
    labels = np.zeros((4, 4), np.uint16)
    labels[0, 0], labels[3, 3] = 1, 255
    mf = read_mask(_save(tmp_path / "s.png", labels))
    assert mf.labels.dtype == np.uint8 and mf.ids == [1, 255]


def test_palette_png_cannot_take_ids_above_255(tmp_path):
    labels = np.array([[0, 300]], np.int32)
    with pytest.raises(ValueError, match="palette PNG") as e:
        save_mask_png(tmp_path / "x.png", labels)
    assert "300" in str(e.value) and not (tmp_path / "x.png").exists()


def test_palette_png_keeps_its_own_palette(tmp_path):
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    pal = DAVIS_PALETTE.copy()
    pal[1], pal[2] = (10, 20, 30), (200, 100, 50)
    save_mask_png(tmp_path / "p.png", labels, pal)
    mf = read_mask(tmp_path / "p.png")
    assert mf.kind == "palette" and mf.ids == [1, 2]
    assert tuple(mf.palette[1]) == (10, 20, 30) and tuple(mf.palette[2]) == (200, 100, 50)


# ------------------------------------------------------------------------------------------ overlay colours

def _de2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu, Dalal 2005)."""
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    cb = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(cb ** 7 / (cb ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    d_l, d_c, d_h = L2 - L1, c2p - c1p, 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbp, cbp = (L1 + L2) / 2, (c1p + c2p) / 2
    hs = h1p + h2p
    hbp = np.where(np.abs(h1p - h2p) > 180, np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2), hs / 2)
    hbp = np.where(c1p * c2p == 0, hs, hbp)
    t = (1 - 0.17 * np.cos(np.radians(hbp - 30)) + 0.24 * np.cos(np.radians(2 * hbp))
         + 0.32 * np.cos(np.radians(3 * hbp + 6)) - 0.20 * np.cos(np.radians(4 * hbp - 63)))
    dth = 30 * np.exp(-((hbp - 275) / 25) ** 2)
    rc = 2 * np.sqrt(cbp ** 7 / (cbp ** 7 + 25 ** 7))
    sl = 1 + 0.015 * (lbp - 50) ** 2 / np.sqrt(20 + (lbp - 50) ** 2)
    sc, sh = 1 + 0.045 * cbp, 1 + 0.015 * cbp * t
    rt = -np.sin(np.radians(2 * dth)) * rc
    return np.sqrt((d_l / sl) ** 2 + (d_c / sc) ** 2 + (d_h / sh) ** 2 + rt * (d_c / sc) * (d_h / sh))


def test_de2000_matches_published_pairs():
    # Sharma et al. test data, pairs 1 and 17
    lab1 = np.array([[50.0, 2.6772, -79.7751], [50.0, 2.5, 0.0]])
    lab2 = np.array([[50.0, 0.0, -82.7485], [73.0, 25.0, -18.0]])
    np.testing.assert_allclose(_de2000(lab1, lab2), [2.0425, 27.1492], atol=1e-3)


@pytest.mark.parametrize("n", [20, 24])
def test_first_objects_have_clearly_distinct_colours(n):
    cols = object_colours(n)
    assert cols.shape == (n + 1, 3) and tuple(cols[0]) == (0, 0, 0)   # background (black) included
    lab = srgb_to_lab(cols)
    i, j = np.triu_indices(n + 1, 1)
    assert _de2000(lab[i], lab[j]).min() >= 20
    assert np.linalg.norm(lab[i] - lab[j], axis=-1).min() >= 20      # CIE76
    # the pair the GUI showed alike (objects 9/10/11 vs 2/1/3) is now far apart
    assert min(_de2000(lab[a], lab[b]) for a, b in [(9, 2), (10, 1), (11, 3)]) >= 20


def test_original_gui_colours_and_many_objects():
    np.testing.assert_array_equal(object_colours(6)[1:], [(255, 50, 50), (50, 255, 50), (50, 50, 255),
                                                           (255, 50, 255), (50, 255, 255), (255, 255, 50)])
    many = object_colours(60)
    np.testing.assert_array_equal(many[:25], object_colours(24))   # a prefix never changes with the count
    assert len({tuple(c) for c in many}) == 61
    lab = srgb_to_lab(many)
    i, j = np.triu_indices(61, 1)
    assert np.linalg.norm(lab[i] - lab[j], axis=-1).min() >= 10


# ------------------------------------------------------------------------------------------ propagate.py

PW, PH, PFRAMES = 128, 112, 3   # 8×7 = 56 memory positions at /16: enough for the top-50 read


@pytest.fixture(scope="module")
def prop_setup(tmp_path_factory):
    from dataset.synthetic import make_clip, write_image_folder
    from tests.helpers_weights import write_seeded_checkpoints
    root = tmp_path_factory.mktemp("prop")
    ckpt = write_seeded_checkpoints(root / "w", ("propagation_model",))["propagation_model"]
    clip = make_clip(num_frames=PFRAMES, width=PW, height=PH, num_objects=2, seed=3)
    write_image_folder(root / "frames", clip.frames, pattern="{:05d}.jpg")
    return root, ckpt, clip.labels[0]


def _propagate(root: Path, ckpt: Path, mask: Path, out: Path, capsys) -> str:
    import propagate
    rc = propagate.main(["--images", str(root / "frames"), "--mask", str(mask), "--output", str(out),
                         "--model", str(ckpt), "--resolution", "-1", "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def test_propagate_rgb_mask_gives_one_object_per_colour_with_its_colour(prop_setup, tmp_path, capsys):
    root, ckpt, labels0 = prop_setup
    colours = np.array([(0, 0, 0), (255, 128, 0), (0, 160, 255)], np.uint8)   # not DAVIS colours
    rgb = colours[labels0]
    mask = _save(tmp_path / "first.png", rgb)
    out = _propagate(root, ckpt, mask, tmp_path / "o", capsys)
    assert "2 object(s)" in out
    files = sorted((tmp_path / "o").glob("*.png"))
    assert len(files) == PFRAMES
    with Image.open(files[0]) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)   # frame 0 = the user's mask
    for f in files:
        with Image.open(f) as im:
            seen = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}
        assert seen <= {tuple(c) for c in colours.tolist()}


def test_propagate_16bit_mask_keeps_its_ids(prop_setup, tmp_path, capsys):
    root, ckpt, labels0 = prop_setup
    lut = np.array([0, 1000, 2000], np.uint16)
    mask = _save(tmp_path / "first16.png", lut[labels0])
    out = _propagate(root, ckpt, mask, tmp_path / "o", capsys)
    assert "[1000, 2000]" in out
    files = sorted((tmp_path / "o").glob("*.png"))
    assert len(files) == PFRAMES
    np.testing.assert_array_equal(read_mask(files[0]).labels, lut[labels0])
    for f in files:
        with Image.open(f) as im:
            assert im.mode.startswith("I")                      # every frame 16-bit, not only some
            assert set(np.unique(np.asarray(im)).tolist()) <= {0, 1000, 2000}


def test_propagate_refuses_an_unreadable_mask_in_one_line(prop_setup, tmp_path, capsys):
    import propagate
    root, ckpt, _ = prop_setup
    noisy = _save(tmp_path / "noisy.png", np.random.RandomState(0).randint(1, 256, (PH, PW, 3), dtype=np.uint8))
    rc = propagate.main(["--images", str(root / "frames"), "--mask", str(noisy), "--output", str(tmp_path / "o"),
                         "--model", str(ckpt), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"error: --mask {noisy}:") and "\n" not in err and "distinct colours" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_rgb_masks_of_one_sequence_keep_ids_across_frames(tmp_path):
    first = read_mask(_save(tmp_path / "0.png", _rgb_mask()))
    later = np.zeros((12, 16, 3), np.uint8)
    later[0:2, 0:2] = GREEN                     # now appears first
    later[5:8, 2:6] = RED
    later[10:12, 0:3] = (255, 255, 255)         # a new colour
    mf = read_mask(_save(tmp_path / "1.png", later), known_colours=first.colours)
    assert mf.colours == {1: BLUE, 2: RED, 3: GREEN, 4: (255, 255, 255)}
    assert mf.labels[0, 0] == 3 and mf.labels[6, 3] == 2 and mf.labels[11, 0] == 4


def test_hard_labels_are_argmax_first_on_ties():
    """Label maps come from ``hard_labels`` (a fast argmax over the channels): same indices as
    ``torch.argmax``, the first channel on ties."""
    import torch

    from model.aggregate import hard_labels
    g = torch.Generator().manual_seed(0)
    prob = torch.softmax(torch.randn(4, 1, 30, 40, generator=g), 0)
    prob[:, 0, :5] = 0.25                     # a four-way tie: the first channel wins, as argmax
    prob[2, 0, 5:8] = prob[3, 0, 5:8] = 0.9   # a tie between 2 and 3 above the rest
    labels = hard_labels(prob)
    assert labels.shape == (1, 30, 40) and labels.dtype == torch.int64
    assert torch.equal(labels, torch.argmax(prob, dim=0))
    assert (labels[0, :5] == 0).all() and (labels[0, 5:8] == 2).all()
