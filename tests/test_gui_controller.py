"""The Qt-free GUI controller with the real InferenceCore and seeded-weight networks (no reference data:
the masks are meaningless, so these tests check flow, bookkeeping and files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gui.controller import AnnotationController, view_to_image
from gui.jobs import run
from gui.session import SessionError, open_session, resolve_scribble_precision
from inference_core.interaction.s2m_controller import S2MController
from model.aggregate import aggregate_sbg, aggregate_wbg
from util.checkpoint import CheckpointError
from util.tensor_util import unpad
from tests.helpers_gui import FakeFBRS, label_centroid, make_test_clip, seeded_networks, session_args
from util.palette import load_mask_png
from util.video_io import FrameSourceError, ImageFolderSource, VideoFileSource, open_frames, working_size

ROOT = Path(__file__).resolve().parents[1]
T = 3


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    return seeded_networks(tmp_path_factory.mktemp("gui_ckpt"))


@pytest.fixture(scope="module")
def clip():
    return make_test_clip(num_frames=T)


@pytest.fixture
def video(clip, tmp_path):
    from dataset.synthetic import write_video
    return write_video(tmp_path / "clip.mp4", clip.frames)


def make_controller(nets, video, workspace, fbrs=None, **kw) -> AnnotationController:
    args = session_args(video=str(video), workspace=str(workspace), resolution=-1, num_objects=2, **kw)
    return open_session(args, networks=nets[0], fbrs_controller=fbrs or FakeFBRS())


def scribble(c: AnnotationController, k: int, x: float, y: float, length: float = 8, positive: bool = True):
    c.set_object(k)
    c.press(x - length, y, positive=positive)
    c.move(x, y)
    run(c.release(x + length, y))


def paint(c: AnnotationController, k: int, y: int = 5, x0: int = 5, x1: int = 30, size: int = 9):
    """A free-hand stroke (no network involved: cheap and deterministic)."""
    c.set_mode("Free")
    c.set_object(k)
    c.set_brush_size(size)
    c.press(x0, y)
    c.move(x1, y)
    run(c.release(x1, y))


def scribble_both(c, clip, frame=0):
    for k in (1, 2):
        scribble(c, k, *label_centroid(clip.labels[frame], k))


def test_scribble_propagate_autosave(nets, clip, video, tmp_path):
    ws = tmp_path / "ws"
    c = make_controller(nets, video, ws)
    c.set_mode("Scribble")
    scribble_both(c, clip)
    mask0 = c.current_mask()
    drawn = c.frame.interaction.drawn_map
    for k in (1, 2):
        x, y = label_centroid(clip.labels[0], k)
        assert drawn[int(round(y)), int(round(x))] == k          # 3-px strokes of each object
    assert set(np.unique(drawn)) == {1, 2, 255}
    # the shown mask is S2M on those scribbles, hard-aggregated (seeded weights: any labels), in the
    # session's scribble precision (bfloat16 on CPUs with native bf16, else float32)
    precision = resolve_scribble_precision(session_args(), torch.device("cpu"))
    assert f"scribbles {precision}" in c.status_text()
    s2m = S2MController(nets[0].s2m, 2, ignore_class=255, precision=precision)
    expected = aggregate_wbg(s2m.interact(c.core.get_image(0), c.core.get_mask(0) * 0, drawn), keep_bg=True,
                             hard=True)
    assert torch.allclose(c.frame.mask, expected)
    assert np.array_equal(mask0, unpad(torch.argmax(expected, 0), c.core.pad)[0].numpy())
    # the edit on frame 0 is on disk before any propagation
    assert np.array_equal(load_mask_png(ws / "masks" / "00000.png"), mask0)
    run(c.propagate())
    assert c.frame.mask is None and not c.busy
    assert any("Propagation finished!" in line for line in c.console)
    assert c.last_speed_fps is not None and c.last_speed_fps > 0
    for t in range(T):
        saved = load_mask_png(ws / "masks" / f"{t:05d}.png")
        assert np.array_equal(saved, c.core.np_masks[t])
        assert set(np.unique(saved)) <= {0, 1, 2}
    for t in range(1, T):
        assert np.array_equal(c.core.np_masks[t], unpad(torch.argmax(c.core.get_prob(t), 0), c.core.pad)[0].numpy())
    session = json.loads((ws / "session.json").read_text())
    assert session["num_objects"] == 2 and session["interacted"] == [0]
    assert session["video"]["frames"] == T and session["video"]["width"] == clip.frames.shape[2]
    # the status line reports frame, object, speed and memory
    s = c.status_text()
    assert f"Frame 0 / {T - 1}" in s and "Object 2 / 2" in s and "frames/s" in s and "MiB" in s
    assert s.startswith("Idle") and f"propagation {c.core.precision}" in s and "device cpu" in s
    # the view only ever gets numpy images
    img = c.render()
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == clip.frames.shape[1:]
    assert c.minimap().shape[:2] == (min(150, clip.frames.shape[1]), min(150, clip.frames.shape[2]))


def test_undo_scribble_strokes_and_whole_interaction(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    c.set_mode("Scribble")
    x, y = label_centroid(clip.labels[0], 1)
    scribble(c, 1, x, y)
    after_one = c.frame.interaction.drawn_map.copy()
    mask_one = c.current_mask().copy()
    x2, y2 = label_centroid(clip.labels[0], 2)
    scribble(c, 2, x2, y2)
    assert (c.frame.interaction.drawn_map == 2).any()
    run(c.undo())                              # back to the first stroke inside the interaction
    assert np.array_equal(c.frame.interaction.drawn_map, after_one)
    assert np.array_equal(c.current_mask(), mask_one)
    run(c.undo())                              # drops the interaction: back to the core's probabilities
    assert c.frame.interaction is None and c.frame.history == []
    assert (c.current_mask() == 0).all()
    assert torch.equal(c.frame.mask, c.core.get_prob(0))


def test_commit_starts_new_scribble_interaction(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    c.set_mode("Scribble")
    scribble(c, 1, *label_centroid(clip.labels[0], 1))
    first = c.frame.interaction
    c.commit()
    committed = c.core.get_mask(0).clone()
    assert c.frame.interaction is None and c.frame.history == [first]
    scribble(c, 2, *label_centroid(clip.labels[0], 2))
    assert c.frame.interaction is not first
    # the new interaction starts from the committed result (hard mask of the frame), empty canvas
    assert torch.equal(c.frame.interaction.prev_mask, committed)
    assert not (c.frame.interaction.drawn_map == 1).any()
    assert c.enabled()["commit"]
    c.set_mode("Click")
    assert not c.enabled()["commit"]


def test_click_mode_targets_current_object(nets, clip, video, tmp_path):
    fbrs = FakeFBRS()
    c = make_controller(nets, video, tmp_path / "ws", fbrs=fbrs)
    assert c.mode == "Click"                   # the original starts in click mode
    x, y = label_centroid(clip.labels[0], 2)
    c.set_object(2)
    c.press(x, y)
    job = c.release(x, y)
    assert fbrs.clicks == [] and c.busy      # f-BRS runs in the job, not in the release
    job.run()
    assert not c.busy
    m = c.current_mask()
    assert m[int(y), int(x)] == 2 and set(np.unique(m)) == {0, 2}
    c.press(x + 30, y, positive=True)
    run(c.release(x + 30, y))
    assert c.frame.interaction is not None and len(c.frame.interaction.clicks) == 2
    run(c.undo())
    assert len(c.frame.interaction.clicks) == 1
    assert np.array_equal(c.current_mask(), m)
    # changing object starts a new click session
    c.set_object(1)
    assert not fbrs.anchored
    c.press(5, 5, positive=False)
    run(c.release(5, 5))
    assert fbrs.clicks[-1][2] is False
    assert len(c.frame.history) == 1


def test_free_mode_paints_soft_probabilities(nets, clip, video, tmp_path):
    # the calls the window makes: set_mode (radio), wheel (mouse wheel), press / move / release
    c = make_controller(nets, video, tmp_path / "ws")
    c.set_mode("Free")
    c.wheel(120 * 2)                           # two notches: 3 + 8
    assert c.brush_size == 11
    c.wheel(-120)
    assert c.brush_size == 7
    c.wheel(120)
    c.set_object(2)
    c.press(20, 30)
    c.move(60, 30)
    job = c.release(60, 30)
    assert job.name == "Free paint…" and (c.current_mask() == 0).all()    # shown when the job has run
    job.run()
    m = c.current_mask()
    assert (m[30, 20:61] == 2).all() and m[30 + 10, 40] == 0
    # soft aggregation (background fixed at 0.5) of the painted probabilities
    assert torch.equal(c.frame.mask, aggregate_sbg(c.frame.interaction.out_prob, keep_bg=True))
    assert (c.frame.interaction.drawn_map[1, 0, 30, 20:61] == 1).all()
    # background paint removes it
    c.press(40, 20, positive=False)
    c.move(40, 40)
    run(c.release(40, 40))
    assert c.current_mask()[30, 40] == 0


def test_local_control_pastes_inside_the_box(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    c.set_mode("Free")
    c.press(10, 10, ctrl=True)
    c.move(70, 60)
    assert c.release(70, 60) is None            # entering local control runs no network
    assert c.in_local_mode and c.local.bbox == (10, 70, 10, 60)
    assert c.view_size == (61, 51)
    assert not c.enabled()["navigate"] and c.enabled()["finish_local"]
    c.set_frame(2)
    assert c.cursor == 0                       # navigation is locked in local mode
    c.set_object(1)
    c.set_brush_size(100)
    c.press(0, 25)
    c.move(60, 25)
    run(c.release(60, 25))                      # paints the whole crop with object 1
    assert (c.local.np_mask == 1).all()
    c.finish_local()
    m = c.current_mask()
    assert not c.in_local_mode
    assert (m[13:58, 13:68] == 1).all()        # box minus the 3-px margin
    assert (m[:10] == 0).all() and (m[:, 71:] == 0).all()
    assert (m[10:13, 10:71] == 0).all()        # the margin is not pasted
    assert any("Finished local control." in line for line in c.console)


def test_reset_frame_and_add_object(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    paint(c, 1)
    paint(c, 2, y=40)
    run(c.propagate())
    prob_before = c.core.get_prob(0).clone()
    c.reset_frame()
    assert (c.current_mask() == 0).all()
    assert torch.equal(c.core.get_prob(0), prob_before)      # kept for the next difference mask
    assert (load_mask_png(tmp_path / "ws" / "masks" / "00000.png") == 0).all()

    c.set_frame(2)
    run(c.add_object())
    assert c.num_objects == 3 and c.core.num_objects == 3 and c.current_object == 3
    assert c.s2m.num_objects == 3
    assert len(c.colours()) == 4
    c.set_mode("Free")
    c.set_brush_size(9)
    c.press(5, 5)
    c.move(30, 5)
    run(c.release(30, 5))
    assert (c.current_mask()[5, 5:31] == 3).all()
    run(c.propagate())
    assert (c.core.np_masks[2][5, 5:31] == 3).all()          # the interacted frame keeps its edit
    assert set(np.unique(c.core.np_masks)) <= {0, 1, 2, 3}
    assert json.loads((tmp_path / "ws" / "session.json").read_text())["num_objects"] == 3


def test_cancel_propagation_keeps_a_consistent_state(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    paint(c, 1)
    steps = c.propagate()
    assert next(steps)[0] == 0
    assert c.busy
    next(steps)                                # one frame done
    steps.close()
    assert not c.busy
    assert any("cancelled after 1 of 2" in line for line in c.console)
    assert c.frame.mask is not None            # the user can propagate again
    saved = load_mask_png(tmp_path / "ws" / "masks" / "00001.png")
    assert np.array_equal(saved, c.core.np_masks[1])
    run(c.propagate())
    assert c.console[-2].endswith("Propagation finished!")
    assert np.array_equal(load_mask_png(tmp_path / "ws" / "masks" / "00002.png"), c.core.np_masks[2])


def test_resume_from_workspace(nets, clip, video, tmp_path):
    ws = tmp_path / "ws"
    c = make_controller(nets, video, ws)
    paint(c, 1)
    run(c.propagate())
    c.set_frame(2)
    run(c.add_object())
    paint(c, 3, x1=20)                         # an edit that was never propagated
    masks = c.core.np_masks.copy()
    del c

    r = make_controller(nets, video, ws)
    assert r.resumed and r.num_objects == 3 and r.core.num_objects == 3
    assert np.array_equal(r.core.np_masks, masks)
    assert r.core.interacted_frames == {0}
    assert r.cursor == 2 and r.frame.mask is not None      # the pending edit can be propagated
    run(r.propagate())
    assert r.core.interacted_frames == {0, 2}
    assert any("Resumed workspace" in line for line in r.console)


def test_workspace_of_another_video_is_not_touched(nets, clip, video, tmp_path):
    from dataset.synthetic import make_clip, write_video
    ws = tmp_path / "ws"
    c = make_controller(nets, video, ws)
    paint(c, 1)
    run(c.propagate())
    before = {p.name: p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}
    other = write_video(tmp_path / "other.mp4", make_clip(num_frames=T, width=128, height=112, seed=99).frames)
    o = make_controller(nets, other, ws)
    assert not o.resumed and not o.workspace.writable
    assert "belongs to another video" in o.workspace_error
    assert any("Workspace not used" in line for line in o.console)
    paint(o, 2, x1=50)
    run(o.propagate())
    after = {p.name: p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}
    assert after == before


def test_export_at_original_resolution(nets, tmp_path):
    from dataset.synthetic import make_clip, write_image_folder
    big = make_clip(num_frames=3, width=256, height=224, num_objects=2, seed=5)
    folder = tmp_path / "frames"
    write_image_folder(folder, big.frames)
    args = session_args(images=str(folder), workspace=str(tmp_path / "ws"), resolution=112, num_objects=2)
    c = open_session(args, networks=nets[0], fbrs_controller=FakeFBRS())
    assert (c.width, c.height) == (128, 112)
    c.set_mode("Free")
    c.set_brush_size(15)
    c.press(40, 50)
    c.move(80, 50)
    run(c.release(80, 50))
    run(c.propagate())
    out = tmp_path / "export"
    run(c.export(out))
    for t in range(3):
        m = load_mask_png(out / "mask" / f"{t:05d}.png")
        assert m.shape == (224, 256)
        small = cv2.resize(m, (128, 112), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(small, c.core.np_masks[t])
        ov = cv2.imread(str(out / "overlay" / f"{t:05d}.png"))
        assert ov.shape == (224, 256, 3)
    assert load_mask_png(out / "mask" / "00000.png")[50 * 2, 60 * 2] == 1
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (256, 224)
    assert not list(out.rglob("*.tmp*"))
    assert c.console[-1].endswith("Done.")


# ---------------------------------------------------------------------- frame sources and bad input
def test_frame_sources_are_lazy_and_resize(clip, tmp_path):
    from dataset.synthetic import write_image_folder, write_video
    assert working_size(640, 480, 480) == (640, 480)
    assert working_size(854, 480, 240) == (427, 240)
    assert working_size(300, 500, 7) == (7, 11)
    assert working_size(300, 500, -1) == (300, 500)
    folder = tmp_path / "frames"
    write_image_folder(folder, clip.frames)
    src = ImageFolderSource(folder, resolution=56, cache_frames=2)
    assert len(src) == T and src.size == (64, 56) and src.original_size == (128, 112)
    for t in range(T):
        assert src[t].shape == (56, 64, 3) and src[t].dtype == np.uint8
    assert src.cached_frames == 2
    assert src.read_original(1).shape == (112, 128, 3)
    vid = VideoFileSource(write_video(tmp_path / "v.mp4", clip.frames), resolution=-1, cache_frames=3)
    assert len(vid) == T
    frames = [vid[t] for t in (2, 0, 1, 2)]
    assert vid.cached_frames == 3
    assert np.array_equal(frames[0], frames[3])
    assert np.abs(frames[1].astype(int) - clip.frames[0]).mean() < 8     # mp4v is lossy
    assert vid.identity()["hash"] == VideoFileSource(tmp_path / "v.mp4").identity()["hash"]


def test_bad_inputs_raise_one_line_errors(clip, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(FrameSourceError, match="OpenCV cannot decode"):
        open_frames(video=str(bad))
    with pytest.raises(FrameSourceError, match="file not found"):
        open_frames(video=str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameSourceError, match="no .jpg or .png frames"):
        open_frames(images=str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "00000.jpg"), np.zeros((112, 128, 3), np.uint8))
    cv2.imwrite(str(mixed / "00001.jpg"), np.zeros((120, 128, 3), np.uint8))
    with pytest.raises(FrameSourceError, match="different sizes") as e:
        open_frames(images=str(mixed))
    assert "\n" not in str(e.value)
    single = tmp_path / "single"
    single.mkdir()
    cv2.imwrite(str(single / "00000.jpg"), np.zeros((112, 128, 3), np.uint8))
    with pytest.raises(SessionError, match="at least 2"):
        open_session(session_args(images=str(single), workspace=str(tmp_path / "w")))


def _run_cli(*args, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, str(ROOT / "interactive_gui.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_missing_weights_and_bad_video(clip, tmp_path):
    from dataset.synthetic import write_video
    video = write_video(tmp_path / "clip.mp4", clip.frames)
    r = _run_cli("--video", str(video), "--prop_model", str(tmp_path / "nope.pth"), "--device", "cpu",
                 "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]   # Qt may add warnings
    assert len(lines) == 1 and "python download_model.py" in lines[0] and "nope.pth" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout



def test_cli_bad_video_and_options(tmp_path, capsys, monkeypatch):
    import interactive_gui
    monkeypatch.chdir(tmp_path)                 # no example/example.mp4 here
    assert interactive_gui.main(["--device", "cpu"]) == 2
    assert "run `python download_model.py`" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    assert interactive_gui.main(["--video", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --video {bad}: OpenCV cannot decode this file; convert it to .mp4 (e.g. ffmpeg -i "
                   "in.mov out.mp4) or extract frames and pass --images FOLDER"]
    with pytest.raises(SystemExit):
        interactive_gui.main(["-h"])
    out = capsys.readouterr().out
    for opt in ("--prop_model", "--fusion_model", "--s2m_model", "--fbrs_model", "--images", "--video",
                "--num_objects", "--mem_freq", "--mem_profile", "--masks", "--no_amp", "--resolution",
                "--device", "--workspace"):
        assert opt in out


def test_view_to_image_mapping():
    # a 200×100 image on a 400×400 label: scaled ×2, centred vertically (offset 100)
    assert view_to_image(0, 100, 400, 400, 200, 100) == (0.0, 0.0)
    assert view_to_image(200, 200, 400, 400, 200, 100) == (100.0, 50.0)
    assert view_to_image(399, 399, 400, 400, 200, 100) == (199.0, 99.0)    # clamped


def test_propagate_refuses_an_edit_from_another_frame(nets, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    assert c.propagate() is None
    assert c.console[-1].endswith("Cannot propagate! No interacted mask!")
    paint(c, 1)
    c.set_frame(2)
    assert c.propagate() is None                   # the original would propagate frame 0's mask from 2
    assert "the last edit is on frame 0" in c.console[-1]
    assert c.core.interacted_frames == set()


def test_num_objects_from_masks_folder(tmp_path):
    from gui.session import count_objects_in_masks
    from util.palette import save_mask_png
    for t, k in enumerate((2, 3)):
        save_mask_png(tmp_path / f"{t:05d}.png", np.full((4, 4), k, np.uint8))
    assert count_objects_in_masks(str(tmp_path)) == 3
    with pytest.raises(SessionError, match="no .png masks"):
        count_objects_in_masks(str(tmp_path / "nothing"))


def test_local_mode_click_and_scribble_use_the_crop(nets, video, tmp_path):
    fbrs = FakeFBRS()
    c = make_controller(nets, video, tmp_path / "ws", fbrs=fbrs)
    c.press(10, 10, ctrl=True)
    c.release(50, 40)                            # crop 41×31 → padded 48×32, pad (3, 4, 0, 1)
    assert c.local.pad == (3, 4, 0, 1) and tuple(c.local.image.shape[-2:]) == (32, 48)
    c.press(20, 15)
    run(c.release(20, 15))
    assert fbrs.clicks[-1] == (20 + 3, 15 + 0, True)     # the crop's pad, not the frame's
    assert c.local.np_mask[15, 20] == 1 and c.local.np_mask.shape == (31, 41)
    c.set_mode("Scribble")
    c.set_object(2)
    c.press(5, 25)
    c.move(30, 25)
    run(c.release(35, 25))
    it = c.local.interaction
    assert it.drawn_map.shape == (31, 41) and (it.drawn_map[25, 5:36] == 2).all()
    assert torch.equal(it.prev_mask, torch.argmax(c.local.history[-1].out_mask, 0).to(torch.uint8))
    run(c.undo())                                # drops the scribble: back to the click result
    assert c.local.interaction is None and c.local.np_mask[15, 20] == 1
    c.finish_local()
    assert c.current_mask()[10 + 15, 10 + 20] == 1 and not c.in_local_mode


# ---------------------------------------------------------------------- jobs, busy state, browsing
def test_busy_controller_refuses_input_politely(nets, clip, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    c.set_mode("Free")
    c.press(5, 5)
    c.move(30, 5)
    job = c.release(30, 5)                     # not run yet: the controller is busy from here on
    assert c.busy and c.activity_text() == "Free paint…" and c.status_text().startswith("Free paint…")
    assert not c.enabled()["draw"] and not c.enabled()["propagate"] and not c.enabled()["navigate"]
    c.press(50, 50)
    assert not c.pressed and c.release(50, 50) is None
    assert c.undo() is None and c.propagate() is None and c.add_object() is None
    c.set_frame(2)
    c.set_mode("Click")
    assert c.cursor == 0 and c.mode == "Free"
    assert sum("Busy (Free paint…): input ignored" in line for line in c.console) == 1   # said once
    job.run()
    assert not c.busy and c.activity_text() == "Idle" and (c.current_mask()[5, 5:31] == 1).all()


def test_closing_an_unstarted_job_ends_the_busy_state(nets, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    paint(c, 1)
    job = c.propagate()
    assert c.busy
    job.close()
    assert not c.busy and c.core.interacted_frames == set() and c.frame.mask is not None


def test_browsing_during_propagation_shows_the_newest_result(nets, video, tmp_path):
    from gui.overlay import overlay
    c = make_controller(nets, video, tmp_path / "ws")
    c.press(40, 40)
    run(c.release(40, 40))                      # a click: its dot stays on frame 0's stroke layer
    job = c.propagate()
    assert next(job) == (0, T - 1)
    assert c.enabled()["navigate"] and c.enabled()["play"] and c.enabled()["cancel"]
    assert not c.enabled()["propagate"] and not c.enabled()["draw"] and not c.enabled()["export"]
    assert next(job) == (1, T - 1)             # frame 1 done, frame 2 not yet
    c.set_frame(1)                              # browsing is allowed while the propagation runs
    assert c.cursor == 1
    newest = unpad(torch.argmax(c.core.get_prob(1), 0), c.core.pad)[0].numpy().astype(np.uint8)
    assert np.array_equal(c.current_mask(), newest)
    # frame 1 shows its own overlay, without frame 0's click dot
    assert np.array_equal(c.render(with_brush=False), overlay(np.asarray(c.frames[1]), newest, "davis", 2))
    assert c.activity_text() == f"Propagating… 1/{T - 1}"
    job.run()
    assert not c.busy and c.cursor == 1
    assert np.array_equal(c.current_mask(), np.asarray(c.core.np_masks[1]))
    assert np.array_equal(c.core.np_masks[1], newest)


def test_object_count_is_the_cores(nets, video, tmp_path):
    c = make_controller(nets, video, tmp_path / "ws")
    assert c.num_objects == c.core.num_objects == 2 and c.s2m.num_objects == 2
    run(c.add_object())
    assert c.num_objects == c.core.num_objects == 3 and c.s2m.num_objects == 3
    assert "num_objects" not in vars(c)


# ---------------------------------------------------------------------- save, export, close, errors
def test_default_export_dir_exists(nets, video, tmp_path, monkeypatch):
    c = make_controller(nets, video, tmp_path / "ws")
    d = c.default_export_dir()
    assert d == tmp_path / "ws" / "export" and d.is_dir()
    # a workspace of another video is never touched: the dialog opens on the current folder
    monkeypatch.chdir(tmp_path)
    other = make_controller(nets, video, tmp_path / "ws2")
    other.workspace.writable = False
    assert other.default_export_dir() == tmp_path and not (tmp_path / "ws2" / "export").exists()


def test_export_follows_overlay_mode_and_keeps_odd_sizes(nets, tmp_path):
    from dataset.synthetic import make_clip, write_image_folder
    from gui.overlay import overlay
    odd = make_clip(num_frames=2, width=203, height=137, num_objects=1, seed=7)
    folder = tmp_path / "frames"
    write_image_folder(folder, odd.frames)
    c = open_session(session_args(images=str(folder), workspace=str(tmp_path / "ws"), resolution=-1,
                                  num_objects=1), networks=nets[0], fbrs_controller=FakeFBRS())
    paint(c, 1, y=20, x0=10, x1=120, size=15)
    c.set_overlay_mode("fade")
    out = tmp_path / "export"
    run(c.export(out))
    mask = load_mask_png(out / "mask" / "00000.png")
    assert mask.shape == (137, 203) and mask[20, 60] == 1
    shown = cv2.cvtColor(cv2.imread(str(out / "overlay" / "00000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(shown, overlay(c.frames.read_original(0), mask, "fade", 1))
    assert not np.array_equal(shown, overlay(c.frames.read_original(0), mask, "davis", 1))
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, first = cap.read()
    # the encoder needs even sizes: the last column and row are repeated, no pixel of the clip is lost
    assert ok and first.shape == (138, 204, 3) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    assert np.abs(first[:137, :203].astype(int) - cv2.cvtColor(shown, cv2.COLOR_RGB2BGR)).mean() < 12


def test_other_videos_workspace_asks_before_losing_edits(nets, video, tmp_path):
    from dataset.synthetic import make_clip, write_video
    ws = tmp_path / "ws"
    make_controller(nets, video, ws)
    other = write_video(tmp_path / "other.mp4", make_clip(num_frames=T, width=128, height=112, seed=99).frames)
    o = make_controller(nets, other, ws)
    assert o.workspace_error and o.close_question() is None        # nothing to lose yet
    paint(o, 1)
    question = o.close_question()
    assert question and "not saved" in question and str(ws) in question
    assert not o.save_workspace_to(ws)                               # still the other video's
    new = tmp_path / "mine"
    assert o.save_workspace_to(new)
    assert o.close_question() is None and o.workspace.root == new
    assert np.array_equal(load_mask_png(new / "masks" / "00000.png"), o.core.np_masks[0])
    r = make_controller(nets, other, new)
    assert r.resumed and np.array_equal(r.core.np_masks, o.core.np_masks)


def test_checkpoint_error_names_the_path_given(nets, video, tmp_path):
    bad = tmp_path / "weights" / "prop.pth"
    with pytest.raises(CheckpointError) as e:
        open_session(session_args(video=str(video), workspace=str(tmp_path / "ws"), prop_model=str(bad)))
    msg = str(e.value)
    assert msg.startswith(f"--prop_model {bad}: ") and f"check {bad}" in msg and "\n" not in msg
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"--s2m_model {junk}: .*check {junk}"):
        open_session(session_args(video=str(video), workspace=str(tmp_path / "ws"), s2m_model=str(junk),
                                  prop_model=str(nets[1]["propagation_model"]), fusion_model=str(nets[1]["fusion"])))


def test_long_clip_memory_bounds_are_the_guis(nets, clip, video, tmp_path):
    """The GUI's session keeps at most --feature_cache_mb of query features and spills probabilities and
    memory values beyond their RAM budgets to the workspace without changing a mask."""
    plain = make_controller(nets, video, tmp_path / "ws1", feature_cache_mb=0, memory_ram_mb=0)
    scribble_both(plain, clip)
    run(plain.propagate())
    assert plain.core.feature_cache_frames == 1     # only the frame in use is kept
    assert plain.core.memory_disk_bytes > 0         # every committed memory frame went to the workspace
    bounded = make_controller(nets, video, tmp_path / "ws2")
    scribble_both(bounded, clip)
    run(bounded.propagate())
    assert bounded.core.feature_cache_frames > 1
    assert bounded.core.memory_disk_bytes == 0      # a short clip fits the default budget
    assert plain.core.feature_bytes < bounded.core.feature_bytes <= 256 * 2 ** 20
    assert np.array_equal(plain.core.np_masks, bounded.core.np_masks)
    # the spill file is anonymous: the workspace holds only the autosaved masks and the session
    assert sorted(p.name for p in (tmp_path / "ws2").iterdir()) == ["masks", "session.json"]
