"""The real PyQt5 window, offscreen (QT_QPA_PLATFORM=offscreen from conftest), driven with mouse events."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QPoint, Qt, QTimer  # noqa: E402

from gui.main_window import SHORTCUTS, MainWindow  # noqa: E402
from gui.session import open_session  # noqa: E402
from tests.helpers_gui import (FakeFBRS, formula_networks, image_to_label, label_centroid,  # noqa: E402
                               make_test_clip, session_args)
from util.palette import load_mask_png  # noqa: E402

pytestmark = pytest.mark.gui
T = 3


@pytest.fixture(scope="module")
def nets(formula, tmp_path_factory):
    return formula_networks(formula, tmp_path_factory.mktemp("gui_ckpt"))


@pytest.fixture(scope="module")
def clip():
    return make_test_clip(num_frames=T)


@pytest.fixture
def video(clip, tmp_path):
    from dataset.synthetic import write_video
    return write_video(tmp_path / "clip.mp4", clip.frames)


def real_or_fake_fbrs():
    """The real f-BRS controller needs the f-BRS network; these tests are about the window, so a
    stand-in click controller keeps them fast (f-BRS itself is tested in its own module)."""
    return FakeFBRS()


def show_window(qtbot, w: MainWindow) -> MainWindow:
    qtbot.addWidget(w)
    w.resize(900, 600)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()          # shortcuts (number keys, arrows) need the active window
    qtbot.waitActive(w)
    w.refresh(full=True)
    return w


def open_window(qtbot, nets, workspace, **kw) -> MainWindow:
    args = session_args(workspace=str(workspace), resolution=-1, num_objects=2, **kw)
    controller = open_session(args, networks=nets[0], fbrs_controller=real_or_fake_fbrs())
    return show_window(qtbot, MainWindow(controller))


def canvas_point(w: MainWindow, x: float, y: float) -> QPoint:
    iw, ih = w.c.view_size
    return QPoint(*image_to_label(x, y, w.canvas.width(), w.canvas.height(), iw, ih))


def drag(qtbot, w: MainWindow, points, button=Qt.LeftButton, modifier=Qt.NoModifier):
    qtbot.mousePress(w.canvas, button, modifier, canvas_point(w, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(w.canvas, canvas_point(w, *p))
    qtbot.mouseRelease(w.canvas, button, modifier, canvas_point(w, *points[-1]))


def propagate(qtbot, w: MainWindow):
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert w.job_running
    qtbot.waitUntil(lambda: not w.job_running, timeout=120_000)


def test_scribble_propagate_mask_files(qtbot, nets, clip, video, tmp_path):
    ws = tmp_path / "ws"
    w = open_window(qtbot, nets, ws, video=str(video))
    qtbot.mouseClick(w.radio_scribble, Qt.LeftButton)
    assert w.c.mode == "Scribble" and w.commit_button.isEnabled() and not w.brush_slider.isEnabled()
    x1, y1 = label_centroid(clip.labels[0], 1)
    drag(qtbot, w, [(x1 - 10, y1), (x1, y1), (x1 + 10, y1)])
    qtbot.keyClick(w, Qt.Key_2)
    assert w.c.current_object == 2
    x2, y2 = label_centroid(clip.labels[0], 2)
    drag(qtbot, w, [(x2 - 10, y2), (x2, y2), (x2 + 10, y2)])
    drawn = w.c.interaction.drawn_map
    # the mouse drags landed where intended (±1 px of canvas → image rounding)
    assert (drawn[int(round(y1)) - 1:int(round(y1)) + 2, int(x1) - 8:int(x1) + 8] == 1).any()
    assert (drawn[int(round(y2)) - 1:int(round(y2)) + 2, int(x2) - 8:int(x2) + 8] == 2).any()
    assert set(np.unique(drawn)) == {1, 2, 255}
    shown = w.c.current_mask().copy()
    # the event loop keeps running while the worker propagates, and the progress bar moves
    ticks, progress = [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(w.job_running))
    timer.start(5)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert w.job_running and w.cancel_button.isEnabled() and not w.run_button.isEnabled()
    w.worker.progress.connect(lambda done, total: progress.append((done, total)))
    qtbot.waitUntil(lambda: not w.job_running, timeout=120_000)
    timer.stop()
    assert any(ticks)                              # timer ticks served during the propagation
    assert progress and progress[-1] == (T - 1, T - 1)
    assert "Propagation finished!" in w.console.toPlainText()
    assert w.progress.format() == "Idle" and w.run_button.isEnabled()
    assert np.array_equal(w.c.core.np_masks[0], shown)
    for t in range(T):
        m = load_mask_png(ws / "masks" / f"{t:05d}.png")
        assert np.array_equal(m, w.c.core.np_masks[t]) and set(np.unique(m)) <= {0, 1, 2}
    assert "frames/s" in w.status.text() and "MiB" in w.status.text()
    # timeline + arrow keys
    qtbot.keyClick(w, Qt.Key_Right)
    assert w.c.cursor == 1 and w.tl_slider.value() == 1 and w.lcd.text().strip().startswith("1")
    qtbot.keyClick(w, Qt.Key_Left)
    assert w.c.cursor == 0


def test_undo_reset_free_mode_and_overlay(qtbot, nets, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    assert w.brush_slider.isEnabled() and not w.commit_button.isEnabled()
    w.brush_slider.setValue(9)
    assert w.c.brush_size == 9 and w.brush_label.text() == "Brush size: 9"
    drag(qtbot, w, [(10, 20), (40, 20), (60, 20)])
    m1 = w.c.current_mask().copy()
    assert (m1[20, 12:58] == 1).all()
    drag(qtbot, w, [(10, 60), (60, 60)], button=Qt.RightButton)     # background: nothing to remove there
    drag(qtbot, w, [(30, 10), (30, 30)], button=Qt.RightButton)      # erases a piece of the stroke
    assert (w.c.current_mask()[20, 27:34] == 0).all()
    qtbot.mouseClick(w.undo_button, Qt.LeftButton)
    assert np.array_equal(w.c.current_mask(), m1)
    for mode in ("fade", "light", "davis"):
        w.combo.setCurrentText(mode)
        assert w.c.overlay_mode == mode
    qtbot.mouseClick(w.reset_button, Qt.LeftButton)
    assert (w.c.current_mask() == 0).all()
    # undo after the reset falls back to the core's probabilities (empty)
    qtbot.mouseClick(w.undo_button, Qt.LeftButton)
    assert (w.c.current_mask() == 0).all()


def test_click_mode_and_brush_wheel(qtbot, nets, clip, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    assert w.radio_click.isChecked()                  # the original starts in click mode
    x, y = label_centroid(clip.labels[0], 1)
    qtbot.mouseClick(w.canvas, Qt.LeftButton, Qt.NoModifier, canvas_point(w, x, y))
    m = w.c.current_mask()
    assert m[int(round(y)), int(round(x))] == 1 and set(np.unique(m)) == {0, 1}
    qtbot.mouseClick(w.canvas, Qt.RightButton, Qt.NoModifier, canvas_point(w, x, y))
    assert w.c.current_mask()[int(round(y)), int(round(x))] == 0
    assert "Interaction Click at frame 0." in w.console.toPlainText()
    # number keys above the object count do nothing; the help lists every shortcut
    qtbot.keyClick(w, Qt.Key_7)
    assert w.c.current_object == 1
    box = w.show_help()
    for key, _ in SHORTCUTS:
        assert key in box.text()


def test_click_with_the_real_fbrs_controller(qtbot, nets, formula, clip, video, tmp_path_factory, tmp_path):
    from model.aggregate import aggregate_sbg
    from tests.helpers_gui import formula_fbrs_controller
    fbrs = formula_fbrs_controller(formula, tmp_path_factory.mktemp("fbrs_ckpt"))
    args = session_args(workspace=str(tmp_path / "ws"), video=str(video), resolution=-1, num_objects=2)
    w = show_window(qtbot, MainWindow(open_session(args, networks=nets[0], fbrs_controller=fbrs)))
    qtbot.keyClick(w, Qt.Key_2)
    x, y = label_centroid(clip.labels[0], 2)
    qtbot.mouseClick(w.canvas, Qt.LeftButton, Qt.NoModifier, canvas_point(w, x, y))
    it = w.c.interaction
    assert len(it.clicks) == 1 and it.tar_obj == 2 and fbrs.num_clicks == 1
    # channel 2 = the binary f-BRS map, channel 1 = the (empty) previous probabilities, hard aggregation
    binary = (fbrs.probs > 0.5).float()
    assert set(np.unique(it.out_prob[1].numpy())) <= {0.0, 1.0}
    assert np.array_equal(it.out_prob[1, 0].numpy(), binary[0, 0].numpy())
    assert np.allclose(w.c.interacted_mask.numpy(), aggregate_sbg(it.out_prob, keep_bg=True, hard=True).numpy())
    assert set(np.unique(w.c.current_mask())) <= {0, 2}


def test_local_control_and_add_object(qtbot, nets, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    drag(qtbot, w, [(20, 20), (50, 40), (80, 70)], modifier=Qt.ControlModifier)
    assert w.c.in_local_mode
    assert w.finish_local_button.isEnabled() and not w.run_button.isEnabled() and not w.tl_slider.isEnabled()
    lx, ux, ly, uy = w.c.local_bb
    assert abs(lx - 20) <= 1 and abs(ux - 80) <= 1 and abs(ly - 20) <= 1 and abs(uy - 70) <= 1
    w.brush_slider.setValue(100)
    drag(qtbot, w, [(0, 25), (30, 25), (60, 25)])        # crop coordinates now
    qtbot.mouseClick(w.finish_local_button, Qt.LeftButton)
    assert not w.c.in_local_mode and w.run_button.isEnabled()
    m = w.c.current_mask()
    assert (m[ly + 3:uy - 2, lx + 3:ux - 2] == 1).all() and (m[:ly] == 0).all()
    qtbot.mouseClick(w.add_object_button, Qt.LeftButton)
    assert w.c.num_objects == 3 and w.c.current_object == 3 and "3 / 3" in w.object_label.text()
    assert w.object_spin.maximum() == 3 and w.object_spin.value() == 3
    w.object_spin.setValue(1)
    assert w.c.current_object == 1
    qtbot.keyClick(w, Qt.Key_2)
    assert w.c.current_object == 2


def test_cancel_resume_and_export(qtbot, nets, tmp_path):
    from dataset.synthetic import make_clip, write_image_folder
    big = make_clip(num_frames=T, width=256, height=224, num_objects=2, seed=5)
    folder = tmp_path / "frames"
    write_image_folder(folder, big.frames)
    ws = tmp_path / "ws"
    # work at a lower resolution than the frames
    args = session_args(workspace=str(ws), images=str(folder), resolution=112, num_objects=2)
    w = show_window(qtbot, MainWindow(open_session(args, networks=nets[0], fbrs_controller=FakeFBRS())))
    assert (w.c.width, w.c.height) == (128, 112)
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    w.brush_slider.setValue(15)
    drag(qtbot, w, [(40, 50), (80, 50)])
    # cancel right away: the core stays consistent, the window idle again
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.mouseClick(w.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.job_running, timeout=120_000)
    text = w.console.toPlainText()
    assert "cancelled" in text or "Propagation finished!" in text
    assert w.progress.format() == "Idle" and w.run_button.isEnabled()
    if w.c.interacted_mask is not None:
        propagate(qtbot, w)
    masks = w.c.core.np_masks.copy()
    w.close()

    # reopen: resumes from the workspace
    w2 = show_window(qtbot, MainWindow(open_session(args, networks=nets[0], fbrs_controller=FakeFBRS())))
    assert w2.c.resumed and np.array_equal(w2.c.core.np_masks, masks)
    assert "Resumed workspace" in w2.console.toPlainText()

    # export at the original resolution, on the worker thread
    out = tmp_path / "export"
    assert w2.start_export(out)
    qtbot.waitUntil(lambda: not w2.job_running, timeout=120_000)
    m0 = load_mask_png(out / "mask" / "00000.png")
    assert m0.shape == (224, 256) and m0[100, 120] == 1
    assert (out / "overlay" / "00002.png").exists() and (out / "overlay.mp4").stat().st_size > 0
    assert "Done." in w2.console.toPlainText()


def test_workspace_of_another_video_shows_a_dialog(qtbot, nets, video, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    other = {"path": "/elsewhere/other.mp4", "frames": 99, "width": 640, "height": 480, "hash": "x"}
    (ws / "session.json").write_text(json.dumps({"video": other, "num_objects": 4}))
    before = (ws / "session.json").read_bytes()
    w = open_window(qtbot, nets, ws, video=str(video))
    assert w.dialogs and "belongs to another video" in w.dialogs[0].text()
    assert "Workspace not used" in w.console.toPlainText()
    assert w.c.num_objects == 2
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    drag(qtbot, w, [(10, 10), (40, 10)])
    propagate(qtbot, w)
    assert (ws / "session.json").read_bytes() == before and not (ws / "masks").exists()
