"""The synthetic DAVIS-layout generator: layout, determinism, official scribble format, clips and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import util.davis_compat  # noqa: F401  (before davisinteractive)
from dataset.synthetic import (META_FILE, SyntheticDataError, generate_davis, initial_scribble, main, make_clip,
                               scribble_frame_order, write_image_folder, write_video)
from util.palette import load_mask_png


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    meta = generate_davis(root, num_sequences=2, num_frames=(8, 6), size=(160, 120), num_objects=(3, 1),
                          num_scribbles=(2, 1), seed=5, num_train_sequences=1)
    return root, meta


def test_layout_and_metadata(dataset):
    root, meta = dataset
    assert meta == json.loads((root / META_FILE).read_text())
    assert sorted(meta) == ["synth-000", "synth-001", "synth-002"]
    assert (root / "ImageSets/2017/val.txt").read_text().split() == ["synth-000", "synth-001"]
    assert (root / "ImageSets/2017/train.txt").read_text().split() == ["synth-002"]
    assert (root / "ImageSets/2016/val.txt").read_text().split() == ["synth-000", "synth-001"]
    assert [meta[s]["num_frames"] for s in sorted(meta)] == [8, 6, 8]
    assert [meta[s]["num_objects"] for s in sorted(meta)] == [3, 1, 3]
    assert [meta[s]["num_scribbles"] for s in sorted(meta)] == [2, 1, 2]
    for seq, m in meta.items():
        w, h = m["image_size"]
        assert (w, h) == (160, 120)
        jpgs = sorted((root / "JPEGImages/480p" / seq).iterdir())
        pngs = sorted((root / "Annotations/480p" / seq).iterdir())
        assert [p.name for p in jpgs] == [f"{i:05d}.jpg" for i in range(m["num_frames"])]
        assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(m["num_frames"])]
        assert cv2.imread(str(jpgs[0])).shape == (h, w, 3)
        with Image.open(pngs[0]) as im:
            assert im.mode == "P" and im.size == (w, h)
        labels = np.stack([load_mask_png(p) for p in pngs])
        # every object is visible in frame 0 (MiVOS takes K from frame 0); no other ids anywhere
        assert np.unique(labels[0]).tolist() == list(range(m["num_objects"] + 1))
        assert labels.max() == m["num_objects"]
        assert sorted(p.name for p in (root / "Scribbles" / seq).iterdir()) == \
            [f"{i:03d}.json" for i in range(1, m["num_scribbles"] + 1)]


def test_scribbles_are_official_format(dataset):
    from davisinteractive.utils.scribbles import scribbles2mask

    root, meta = dataset
    for seq, m in meta.items():
        w, h = m["image_size"]
        labels = np.stack([load_mask_png(root / "Annotations/480p" / seq / f"{f:05d}.png")
                           for f in range(m["num_frames"])])
        frames_used = []
        for idx in range(1, m["num_scribbles"] + 1):
            data = json.loads((root / "Scribbles" / seq / f"{idx:03d}.json").read_text())
            assert data["sequence"] == seq
            assert len(data["scribbles"]) == m["num_frames"]
            annotated = [f for f, strokes in enumerate(data["scribbles"]) if strokes]
            assert len(annotated) == 1
            frame = annotated[0]
            frames_used.append(frame)
            strokes = data["scribbles"][frame]
            # positive strokes only, every object has one
            assert sorted({s["object_id"] for s in strokes}) == list(range(1, m["num_objects"] + 1))
            for s in strokes:
                assert set(s) == {"path", "object_id", "start_time", "end_time"}
                path = np.asarray(s["path"])
                assert path.ndim == 2 and path.shape[1] == 2 and len(path) >= 2
                assert path.min() >= 0.0 and path.max() <= 1.0
            # the strokes are mostly on their object
            drawn = scribbles2mask(data, (h, w))[frame]
            for k in range(1, m["num_objects"] + 1):
                on_stroke = drawn == k
                assert on_stroke.any()
                assert (labels[frame][on_stroke] == k).mean() > 0.8
        # scribble 1 is on the frame where the smallest object is largest; further ones on the next best frames
        order = scribble_frame_order(labels, m["num_objects"])
        assert frames_used == order[:m["num_scribbles"]]


def test_same_seed_same_files_different_seed_different(tmp_path):
    kwargs = dict(num_sequences=2, num_frames=4, size=(64, 48), num_objects=(2, 1))
    generate_davis(tmp_path / "a", seed=1, **kwargs)
    generate_davis(tmp_path / "b", seed=1, **kwargs)
    generate_davis(tmp_path / "c", seed=2, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    changed = [k for k in a if a[k] != c[k]]
    assert any(k.endswith(".jpg") for k in changed) and any(k.endswith(".png") for k in changed)
    assert any(k.endswith(".json") and "Scribbles" in k for k in changed)


def test_sequence_content_depends_only_on_seed_and_index(tmp_path):
    generate_davis(tmp_path / "a", num_sequences=1, num_frames=3, size=(64, 48), num_objects=2, seed=4)
    generate_davis(tmp_path / "b", num_sequences=3, num_frames=3, size=(64, 48), num_objects=2, seed=4)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert all(b[k] == v for k, v in a.items() if "synth-000" in k)


def test_make_clip_shapes_motion_and_any_resolution():
    clip = make_clip(num_frames=6, width=100, height=75, num_objects=4, seed=0)
    assert clip.frames.shape == (6, 75, 100, 3) and clip.frames.dtype == np.uint8
    assert clip.labels.shape == (6, 75, 100) and clip.labels.dtype == np.uint8
    assert clip.image_size == [100, 75] and clip.num_frames == 6
    assert set(np.unique(clip.labels[0])) == set(range(5))
    # objects move: masks differ between the first and the last frame
    assert (clip.labels[0] != clip.labels[-1]).mean() > 0.01
    # textured: objects and background are not flat colours
    assert clip.frames[0][clip.labels[0] == 1].std() > 5 and clip.frames[0][clip.labels[0] == 0].std() > 5
    again = make_clip(num_frames=6, width=100, height=75, num_objects=4, seed=0)
    np.testing.assert_array_equal(clip.frames, again.frames)
    np.testing.assert_array_equal(clip.labels, again.labels)
    big = make_clip(num_frames=1, width=854, height=480, num_objects=2, seed=0)
    assert big.frames.shape == (1, 480, 854, 3)


def test_small_object_gets_centroid_line():
    labels = np.zeros((3, 40, 50), np.uint8)
    labels[:, 5:30, 5:35] = 1
    labels[:, 33:35, 40:43] = 2  # 2×3 pixels: too small for a robot skeleton of >= 4 nodes
    data = initial_scribble("tiny", labels, 2, frame=1)
    assert len(data["scribbles"]) == 3 and not data["scribbles"][0] and not data["scribbles"][2]
    strokes = {s["object_id"]: np.asarray(s["path"]) for s in data["scribbles"][1]}
    assert set(strokes) == {1, 2}
    # the fallback line lies on the object: back to pixels with the robot's (W, H) normalisation
    px = np.round(strokes[2] * [50, 40]).astype(int)
    assert np.all(labels[1][px[:, 1], px[:, 0]] == 2)


def test_write_video_and_image_folder(tmp_path):
    clip = make_clip(num_frames=5, width=64, height=48, num_objects=1, seed=2)
    paths = write_image_folder(tmp_path / "frames", clip.frames)
    assert [p.name for p in paths] == [f"{i:05d}.jpg" for i in range(5)]
    back = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    assert np.abs(back.astype(int) - clip.frames[0]).mean() < 8
    video = write_video(tmp_path / "clip.mp4", clip.frames, fps=10)
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--sequences", "1", "--frames", "3", "--objects", "2",
                 "--size", "48", "32"]) == 0
    meta = json.loads((tmp_path / "d" / META_FILE).read_text())
    assert meta == {"synth-000": {"num_frames": 3, "num_objects": 2, "num_scribbles": 1, "image_size": [48, 32],
                                  "set": "val"}}
    assert main(["--video", str(tmp_path / "v"), "--frames", "2", "--size", "32", "32"]) == 0
    assert len(list((tmp_path / "v").glob("*.jpg"))) == 2
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "e"), "--frames", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --frames 0: must be a positive whole number (1 or more)"


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(SyntheticDataError, match="num_objects"):
        make_clip(num_objects=0)
    with pytest.raises(SyntheticDataError, match="width"):
        make_clip(width=4)
    with pytest.raises(SyntheticDataError, match="num_scribbles"):
        generate_davis(tmp_path, num_scribbles=0)
