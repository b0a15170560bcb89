"""propagate.py: a video / image folder + a first-frame mask with arbitrary ids → masks at the original size."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import propagate
from dataset.synthetic import make_clip, write_image_folder, write_video
from util.palette import DAVIS_PALETTE, load_mask_png, save_mask_png

# original 150×130, processed at shorter side 112 (129×112 → 8×9 = 72 memory positions ≥ top-50)
WIDTH, HEIGHT, FRAMES, RES = 150, 130, 4, 112
IDS = (3, 7)


@pytest.fixture(scope="module")
def prop_checkpoint(seeded_checkpoints) -> Path:
    return seeded_checkpoints["propagation_model"]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    clip = make_clip(num_frames=FRAMES, width=WIDTH, height=HEIGHT, num_objects=2, seed=1)
    lut = np.zeros(256, np.uint8)
    lut[1], lut[2] = IDS
    mask0 = lut[clip.labels[0]]
    save_mask_png(root / "mask0.png", mask0)
    write_video(root / "clip.mp4", clip.frames)
    write_image_folder(root / "frames", clip.frames, pattern="frame_{:03d}.jpg")
    return root, mask0


def _check_masks(files: list[Path], mask0: np.ndarray) -> None:
    assert len(files) == FRAMES
    masks = [load_mask_png(f) for f in files]
    assert all(Image.open(f).mode == "P" for f in files)
    assert all(m.shape == (HEIGHT, WIDTH) for m in masks)
    assert all(set(np.unique(m)) <= {0, *IDS} for m in masks)
    np.testing.assert_array_equal(masks[0], mask0)
    # both ids survive propagation (even seeded weights give every object some pixels on this clip)
    assert set(np.unique(np.concatenate([m.ravel() for m in masks[1:]]))) & set(IDS)


def test_propagate_video_with_overlay(prop_checkpoint, clip_files, tmp_path, capsys):
    root, mask0 = clip_files
    out, overlay = tmp_path / "masks", tmp_path / "overlay.mp4"
    rc = propagate.main(["--video", str(root / "clip.mp4"), "--mask", str(root / "mask0.png"), "--output", str(out),
                         "--overlay", str(overlay), "--model", str(prop_checkpoint), "--resolution", str(RES),
                         "--device", "cpu", "--quiet"])
    assert rc == 0
    assert "processed at 129x112" in capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{t:05d}.png" for t in range(FRAMES)]
    _check_masks(files, mask0)
    cap = cv2.VideoCapture(str(overlay))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)


def test_propagate_image_folder_keeps_names_and_ids_in_bounded_memory(seeded_prop_net, clip_files, tmp_path):
    import torch
    from util.video_io import ImageFolderSource

    root, mask0 = clip_files
    net = seeded_prop_net
    source = ImageFolderSource(root / "frames", resolution=RES, cache_frames=2)
    out = tmp_path / "masks"
    stats = propagate.propagate_to_files(net, source, mask0, list(IDS), out, propagate.frame_names(source),
                                         mem_freq=2, device=torch.device("cpu"))
    files = sorted(out.glob("*.png"))
    assert [f.stem for f in files] == [f"frame_{t:03d}" for t in range(FRAMES)]
    _check_masks(files, mask0)
    # at most two frames of probabilities (uint16, (K+1)×H'×W' padded to /16: frame 0 + the newest) and one
    # frame of query features are held at a time, whatever the length
    one_frame_probs = (len(IDS) + 1) * 112 * 144 * 2
    assert 0 < stats["peak_prob_bytes"] <= 2 * one_frame_probs
    with torch.no_grad():
        one_frame_features = sum(f.numel() * 4 for f in net.get_query_values(torch.zeros(1, 3, 112, 144)))
    assert stats["peak_feature_bytes"] <= one_frame_features
    assert source.cached_frames <= 2


def test_overlay_colours_are_the_palette():
    frame = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 3], [7, 0]], np.uint8)
    out = propagate.overlay_frame(frame, labels, alpha=0.5)
    assert (out[0, 0] == 100).all()
    np.testing.assert_array_equal(out[0, 1], ((100 + DAVIS_PALETTE[3].astype(float)) / 2).astype(np.uint8))


def _run_error(argv: list[str], capsys) -> str:
    assert propagate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    return err


def test_propagate_bad_inputs(prop_checkpoint, clip_files, tmp_path, capsys):
    root, mask0 = clip_files
    common = ["--output", str(tmp_path / "o"), "--model", str(prop_checkpoint), "--device", "cpu", "--quiet"]
    mask = ["--mask", str(root / "mask0.png")]

    err = _run_error(["--video", str(tmp_path / "missing.mp4"), *mask, *common], capsys)
    assert "missing.mp4" in err
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    assert "broken.mp4" in _run_error(["--video", str(bad), *mask, *common], capsys)

    small = tmp_path / "small.png"
    save_mask_png(small, mask0[:100, :120])
    err = _run_error(["--video", str(root / "clip.mp4"), "--mask", str(small), *common], capsys)
    assert "120x100" in err and f"{WIDTH}x{HEIGHT}" in err

    empty = tmp_path / "empty.png"
    save_mask_png(empty, np.zeros_like(mask0))
    assert "empty" in _run_error(["--images", str(root / "frames"), "--mask", str(empty), *common], capsys)

    assert "nomask.png" in _run_error(["--images", str(root / "frames"), "--mask", str(tmp_path / "nomask.png"),
                                       *common], capsys)
    err = _run_error(["--images", str(root / "frames"), *mask, "--output", str(tmp_path / "o"),
                      "--model", str(tmp_path / "nope.pth"), "--quiet"], capsys)
    assert "nope.pth" in err
