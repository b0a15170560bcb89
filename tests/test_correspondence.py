"""try_correspondence.py / model.propagation.corr_network: headless overlays, affinity invariants,
identity check, one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import try_correspondence
from model.factory import load_correspondence
from model.propagation.corr_network import Correspondence, CorrespondenceNetwork
from util.heatmap import mark_point, overlay_heatmap
from util.image_util import normalize_frames


def textured_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradient + blocky random texture: every 16×16 cell looks different."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    return np.clip(0.6 * blocks + 0.3 * grad + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("corr_images")
    src, tar = textured_image(50, 70, 1), textured_image(40, 60, 2)  # not multiples of 16
    Image.fromarray(src).save(d / "src.png")
    Image.fromarray(tar).save(d / "tar.jpg", quality=95)
    return d / "src.png", d / "tar.jpg", src


@pytest.fixture(scope="module")
def ckpt(seeded_checkpoints):
    """A propagation checkpoint (seeded weights: the heat maps mean nothing, the plumbing is checked)."""
    return seeded_checkpoints["propagation_model"]


@pytest.fixture(scope="module")
def corr_net(ckpt):
    return load_correspondence(ckpt, "cpu")


def test_headless_writes_one_overlay_per_point(images, ckpt, corr_net, tmp_path, capsys):
    src_path, tar_path, src = images
    out = tmp_path / "overlays"
    rc = try_correspondence.main(["--src_image", str(src_path), "--tar_image", str(tar_path), "--model", str(ckpt),
                                  "--device", "cpu", "--points", "10,20", "69,49", "35.4,25", "--output", str(out)])
    assert rc == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["point_00_x10_y20.png", "point_01_x69_y49.png", "point_02_x35_y25.png"]
    tar = np.asarray(Image.open(tar_path).convert("RGB")).copy()
    corr = Correspondence(corr_net, normalize_frames(src), normalize_frames(tar))
    for f, (x, y) in zip(files, [(10, 20), (69, 49), (35, 25)]):
        im = np.asarray(Image.open(f))
        assert im.shape == (50, 70 + 8 + 60, 3)
        assert np.array_equal(im[:, :70], mark_point(src, x, y))
        # the target half is the heat-map overlay of that point (PNG is lossless)
        assert np.array_equal(im[:40, 78:], overlay_heatmap(tar, corr.source_to_target(x, y).numpy()))
    assert capsys.readouterr().out.count(".png") == 3


def test_headless_reverse_direction(images, corr_net, tmp_path):
    src_path, tar_path, src = images
    tar = np.asarray(Image.open(tar_path).convert("RGB"))
    corr = Correspondence(corr_net, normalize_frames(src.copy()), normalize_frames(tar.copy()))
    paths = try_correspondence.run_headless(corr, src, tar, [(5, 5), (59, 39)], True, tmp_path / "rev")
    assert [p.name for p in paths] == ["point_00_x5_y5.png", "point_01_x59_y39.png"]
    assert np.asarray(Image.open(paths[0])).shape == (50, 60 + 8 + 70, 3)
    with pytest.raises(try_correspondence.UsageError, match="outside the target image"):
        try_correspondence.run_headless(corr, src, tar, [(60, 5)], True, tmp_path / "rev")


class PatchKeyNet(CorrespondenceNetwork):
    """Keys = the normalised 4×4-pooled RGB patch of each 16×16 cell (memory and query alike).

    With such keys every cell of an image matches itself best (Cauchy–Schwarz), whatever the
    trained weights would do, so the test checks the plumbing: padding offsets, x/y → cell
    indexing, affinity direction, ×16 upsampling and un-padding."""

    def _patch_key(self, frame: torch.Tensor) -> torch.Tensor:
        cells = F.pixel_unshuffle(F.avg_pool2d(frame, 4), 4)  # B×48×h×w
        cells = torch.cat([cells, torch.full_like(cells[:, :1], 0.1)], 1)
        keys = 12 * cells / cells.norm(dim=1, keepdim=True)
        return F.pad(keys, (0, 0, 0, 0, 0, 128 - keys.shape[1]))

    def get_mem_key(self, frame, mask=None, others=None):
        return self._patch_key(frame)

    def get_query_key(self, frame):
        return self._patch_key(frame)


@pytest.mark.parametrize("hw", [(100, 150), (96, 144)])
def test_identity_peaks_at_the_same_place(hw):
    h, w = hw
    img = textured_image(h, w, 5)
    x = normalize_frames(img)
    corr = Correspondence(PatchKeyNet(), x, x)
    lw, _, lh, _ = corr.src_pad
    for py in range(0, h, 7):
        for px in range(0, w, 7):
            for heat in (corr.source_to_target(px, py), corr.target_to_source(px, py)):
                assert heat.shape == (h, w)
                row, col = divmod(int(heat.argmax()), w)
                # the peak lies in the clicked 16×16 cell of the padded grid
                assert ((row + lh) // 16, (col + lw) // 16) == ((py + lh) // 16, (px + lw) // 16), (px, py, row, col)


def test_affinity_and_heat_map_match_direct_computation(corr_net):
    net = corr_net
    src, tar = normalize_frames(textured_image(40, 70, 7)), normalize_frames(textured_image(30, 50, 8))
    corr = Correspondence(net, src, tar)
    assert corr.W_forward.shape == (1, 3 * 5, 2 * 4) and corr.W_reverse.shape == (1, 2 * 4, 3 * 5)
    for W in (corr.W_forward, corr.W_reverse):
        assert (W >= 0).all()
        assert torch.allclose(W.sum(dim=1), torch.ones(1, W.shape[2]), atol=1e-5)
    # independent computation: keys of the padded images, softmax over source cells
    src_p, tar_p = F.pad(src, corr.src_pad), F.pad(tar, corr.tar_pad)
    with torch.inference_mode():
        empty = torch.zeros(1, 1, *src_p.shape[-2:])
        mk = net.kv_m_f16.key_proj(net.mask_rgb_encoder(src_p, empty, empty))[0].flatten(1)   # 128×15
        qk = net.kv_q_f16.key_proj(net.rgb_encoder(tar_p)[0])[0].flatten(1)                  # 128×8
        W = torch.softmax(mk.T @ qk / 128 ** 0.5, dim=0)
    assert torch.allclose(corr.W_forward[0], W, atol=1e-6)
    x, y = 37, 21
    lw, _, lh, _ = corr.src_pad
    row_of_w = W[((y + lh) // 16) * 5 + (x + lw) // 16].view(1, 1, 2, 4)
    heat = F.interpolate(row_of_w, size=(32, 64), mode="bilinear", align_corners=False)
    tl, _, tt, _ = corr.tar_pad
    heat = heat[0, 0, tt:tt + 30, tl:tl + 50]
    assert torch.allclose(corr.source_to_target(x, y), heat / (heat.max() + 1e-6), atol=1e-5)


@pytest.mark.parametrize("case", ["missing_image", "text_image", "fusion_ckpt", "missing_ckpt", "bad_point",
                                  "outside_point", "points_without_output"])
def test_errors_are_one_line(case, images, ckpt, tmp_path, capsys):
    src_path, tar_path, _ = images
    args = {"--src_image": str(src_path), "--tar_image": str(tar_path), "--model": str(ckpt)}
    extra = ["--points", "1,1", "--output", str(tmp_path / "o")]
    expect = ""
    if case == "missing_image":
        args["--src_image"] = str(tmp_path / "nope.jpg")
        expect = "--src_image"
    elif case == "text_image":
        (tmp_path / "t.jpg").write_text("not an image")
        args["--tar_image"] = str(tmp_path / "t.jpg")
        expect = "cannot read the image"
    elif case == "fusion_ckpt":
        from model.fusion_net import FusionNet
        torch.save(FusionNet().state_dict(), tmp_path / "fusion.pth")
        args["--model"] = str(tmp_path / "fusion.pth")
        expect = "missing keys"
    elif case == "missing_ckpt":
        args["--model"] = str(tmp_path / "saves" / "propagation_model.pth")
        expect = "python download_model.py"
    elif case == "bad_point":
        extra = ["--points", "3;4", "--output", str(tmp_path / "o")]
        expect = "x,y"
    elif case == "outside_point":
        extra = ["--points", "70,10", "--output", str(tmp_path / "o")]
        expect = "outside"
    elif case == "points_without_output":
        extra = ["--points", "1,1"]
        expect = "--output"
    argv = [a for kv in args.items() for a in kv] + extra
    if case == "bad_point":
        with pytest.raises(SystemExit) as e:
            try_correspondence.main(argv)
        rc = e.value.code
    else:
        rc = try_correspondence.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err
    # our errors are one line; argparse's own (bad point syntax) come after its usage lines
    lines = err.splitlines()
    assert expect in lines[-1] and (case == "bad_point" or len(lines) == 1), err


def test_gui_mode_without_opencv_gui_fails_fast(images, tmp_path, capsys, monkeypatch):
    import cv2

    def no_gui(*a, **k):
        raise cv2.error("The function is not implemented")
    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    src_path, tar_path, _ = images
    # the model path does not exist: the GUI check must come first (before any loading)
    rc = try_correspondence.main(["--src_image", str(src_path), "--tar_image", str(tar_path),
                                  "--model", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "no GUI support" in err and "--points" in err


def test_gui_loop_hover_both_windows(images, corr_net, monkeypatch):
    """Drive the OpenCV loop with fake window functions: hovering the source shows the heat map on
    the target and the reverse; Esc quits."""
    import cv2
    src_path, tar_path, src = images
    tar = np.asarray(Image.open(tar_path).convert("RGB")).copy()
    corr = Correspondence(corr_net, normalize_frames(src), normalize_frames(tar))
    callbacks, shown = {}, []
    events = iter([("Source", 10, 12), ("Target", 30, 20), ("Source", 500, 500), None])

    def wait_key(delay):
        ev = next(events)
        if ev is None:
            return 27
        window, x, y = ev
        callbacks[window](cv2.EVENT_MOUSEMOVE, x, y, 0, None)
        return -1

    monkeypatch.setattr(cv2, "setMouseCallback", lambda w, cb: callbacks.__setitem__(w, cb))
    monkeypatch.setattr(cv2, "imshow", lambda w, im: shown.append((w, im.copy())))
    monkeypatch.setattr(cv2, "waitKey", wait_key)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda w, p: 1.0)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    try_correspondence.run_gui(corr, src, tar)
    # initial frame + one update per in-image hover (the out-of-image hover redraws nothing)
    assert [w for w, _ in shown] == ["Source", "Target"] * 3
    bgr = lambda im: im[..., ::-1]  # noqa: E731
    assert np.array_equal(shown[0][1], bgr(src)) and np.array_equal(shown[1][1], bgr(tar))
    # after hovering the source: target changed (heat map), source shows the marker
    assert not np.array_equal(shown[3][1], bgr(tar)) and not np.array_equal(shown[2][1], bgr(src))
    assert np.array_equal(shown[3][1], bgr(overlay_heatmap(tar, corr.source_to_target(10, 12).numpy())))
    # after hovering the target: the source carries the heat map, the target the marker
    assert np.array_equal(shown[4][1], bgr(overlay_heatmap(src, corr.target_to_source(30, 20).numpy())))
    assert np.array_equal(shown[5][1], bgr(mark_point(tar, 30, 20)))


def test_overlay_heatmap_values():
    img = np.full((2, 3, 3), 100, dtype=np.uint8)
    heat = np.array([[0.0, 0.25, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    out = overlay_heatmap(img, heat).astype(int)
    assert out[0, 0].tolist() == [70, 70, 70]                       # no heat: dimmed to 70 %
    assert out[0, 2].tolist() == out[1, 0].tolist() == [208, 30, 30]  # heat ≥ 0.5 saturates: 30 % + red
    assert out[0, 1].tolist() == [139, 50, 50]                      # half way: 35 + 15 + 89.25
