"""The real PyQt5 window, offscreen (QT_QPA_PLATFORM=offscreen from conftest), driven with mouse events.

Seeded-weight networks (no reference data): the masks are meaningless, so these tests check what the
user sees happen (files, widgets, the event loop, the mask bookkeeping), not segmentation quality.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QPoint, QPointF, Qt, QTimer  # noqa: E402
from PyQt5.QtGui import QWheelEvent  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from gui.main_window import SHORTCUTS, MainWindow  # noqa: E402
from gui.overlay import overlay  # noqa: E402
from gui.session import open_session  # noqa: E402
from tests.helpers_gui import (FakeFBRS, GatedFBRS, gate_propagation, image_to_label,  # noqa: E402
                               label_centroid, make_test_clip, seeded_networks, session_args)
from util.palette import load_mask_png  # noqa: E402

pytestmark = pytest.mark.gui
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


def show_window(qtbot, w: MainWindow) -> MainWindow:
    qtbot.addWidget(w)
    w.resize(900, 600)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()          # shortcuts (number keys, arrows) need the active window
    qtbot.waitActive(w)
    w.refresh(full=True)
    return w


def open_window(qtbot, nets, workspace, fbrs=None, **kw) -> MainWindow:
    # a stand-in click controller keeps these tests about the window (f-BRS has its own tests and
    # test_click_with_the_real_fbrs_controller below)
    args = session_args(workspace=str(workspace), resolution=-1, num_objects=2, **kw)
    controller = open_session(args, networks=nets[0], fbrs_controller=fbrs or FakeFBRS())
    return show_window(qtbot, MainWindow(controller))


def canvas_point(w: MainWindow, x: float, y: float) -> QPoint:
    iw, ih = w.c.view_size
    return QPoint(*image_to_label(x, y, w.canvas.width(), w.canvas.height(), iw, ih))


def wait_idle(qtbot, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: not w.job_running, timeout=120_000)
    assert not w.c.busy and w.progress.format() == "Idle"


def drag(qtbot, w: MainWindow, points, button=Qt.LeftButton, modifier=Qt.NoModifier, wait=True):
    qtbot.mousePress(w.canvas, button, modifier, canvas_point(w, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(w.canvas, canvas_point(w, *p))
    qtbot.mouseRelease(w.canvas, button, modifier, canvas_point(w, *points[-1]))
    if wait:
        wait_idle(qtbot, w)


def click(qtbot, w: MainWindow, x: float, y: float, button=Qt.LeftButton, wait=True):
    qtbot.mouseClick(w.canvas, button, Qt.NoModifier, canvas_point(w, x, y))
    if wait:
        wait_idle(qtbot, w)


def propagate(qtbot, w: MainWindow):
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert w.job_running
    wait_idle(qtbot, w)


def ticking_timer(ticks: list) -> QTimer:
    """A 5 ms timer counting its ticks: it only ticks while the GUI thread's event loop runs."""
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    return timer


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
    drawn = w.c.frame.interaction.drawn_map
    # the mouse drags landed where intended (±1 px of canvas → image rounding)
    assert (drawn[int(round(y1)) - 1:int(round(y1)) + 2, int(x1) - 8:int(x1) + 8] == 1).any()
    assert (drawn[int(round(y2)) - 1:int(round(y2)) + 2, int(x2) - 8:int(x2) + 8] == 2).any()
    assert set(np.unique(drawn)) == {1, 2, 255}
    shown = w.c.current_mask().copy()
    progress = []
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert w.job_running and w.cancel_button.isEnabled() and not w.run_button.isEnabled()
    w.worker.progress.connect(lambda done, total: progress.append((done, total)))
    wait_idle(qtbot, w)
    assert progress and progress[-1] == (T - 1, T - 1)
    assert "Propagation finished!" in w.console.toPlainText()
    assert w.run_button.isEnabled()
    assert np.array_equal(w.c.core.np_masks[0], shown)
    for t in range(T):
        m = load_mask_png(ws / "masks" / f"{t:05d}.png")
        assert np.array_equal(m, w.c.core.np_masks[t]) and set(np.unique(m)) <= {0, 1, 2}
    status = w.status.text()
    assert status.startswith("Idle") and "frames/s" in status and "MiB" in status
    assert f"propagation {w.c.core.precision}" in status and "device cpu" in status
    # timeline + arrow keys
    qtbot.keyClick(w, Qt.Key_Right)
    assert w.c.cursor == 1 and w.tl_slider.value() == 1 and w.lcd.text().strip().startswith("1")
    qtbot.keyClick(w, Qt.Key_Left)
    assert w.c.cursor == 0


def test_event_loop_runs_during_a_click(qtbot, nets, clip, video, tmp_path):
    fbrs = GatedFBRS()
    w = open_window(qtbot, nets, tmp_path / "ws", fbrs=fbrs, video=str(video))
    x, y = label_centroid(clip.labels[0], 1)
    ticks: list = []
    timer = ticking_timer(ticks)
    try:
        click(qtbot, w, x, y, wait=False)
        assert w.job_running
        qtbot.waitUntil(fbrs.entered.is_set, timeout=10_000)    # the worker is inside f-BRS now
        qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=10_000)
        # while f-BRS works: the window says so, input is refused politely, nothing is lost
        assert w.job_running and not fbrs.gate.is_set()
        assert w.progress.format() == "f-BRS click…" and w.status.text().startswith("f-BRS click…")
        assert not w.radio_free.isEnabled() and not w.run_button.isEnabled() and not w.undo_button.isEnabled()
        assert not w.tl_slider.isEnabled() and not w.cancel_button.isEnabled()
        click(qtbot, w, x + 20, y, wait=False)
        assert "Busy (f-BRS click…): input ignored until it finishes." in w.console.toPlainText()
        fbrs.gate.set()
        wait_idle(qtbot, w)
    finally:
        fbrs.gate.set()
        timer.stop()
    assert len(fbrs.clicks) == 1
    assert w.c.current_mask()[int(round(y)), int(round(x))] == 1
    assert w.radio_free.isEnabled() and w.run_button.isEnabled()


def test_event_loop_runs_and_frames_browse_during_propagation(qtbot, nets, video, tmp_path, monkeypatch):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    drag(qtbot, w, [(10, 20), (60, 20)])
    gate, reached = gate_propagation(monkeypatch, w.c.core, after_frames=1)
    ticks: list = []
    timer = ticking_timer(ticks)
    try:
        qtbot.mouseClick(w.run_button, Qt.LeftButton)
        qtbot.waitUntil(reached.is_set, timeout=60_000)        # frame 1 done, frame 2 waits
        qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=10_000)
        assert w.job_running and w.progress.format() == f"Propagating… 1/{T - 1}"
        # usable: timeline, arrow keys, Play; not usable (and looking so): the rest
        assert w.tl_slider.isEnabled() and w.play_button.isEnabled() and w.cancel_button.isEnabled()
        for b in (w.run_button, w.save_button, w.undo_button, w.reset_button, w.add_object_button,
                  w.radio_click, w.object_spin, w.commit_button):
            assert not b.isEnabled()
        qtbot.keyClick(w, Qt.Key_Right)
        assert w.c.cursor == 1 and w.tl_slider.value() == 1
        newest = w.c.current_mask().copy()
        assert np.array_equal(w.c.render(with_brush=False),
                              overlay(np.asarray(w.c.frames[1]), newest, w.c.overlay_mode, 2))
        qtbot.mouseClick(w.play_button, Qt.LeftButton)
        assert w.play_timer.isActive()
        qtbot.waitUntil(lambda: w.c.cursor != 1, timeout=10_000)
        qtbot.mouseClick(w.play_button, Qt.LeftButton)
        w.tl_slider.setValue(1)
        gate.set()
        wait_idle(qtbot, w)
    finally:
        gate.set()
        timer.stop()
    assert "Propagation finished!" in w.console.toPlainText()
    assert w.c.cursor == 1 and np.array_equal(w.c.current_mask(), newest)


def qimage_array(pixmap) -> np.ndarray:
    img = pixmap.toImage().convertToFormat(4)     # QImage.Format_RGB32
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3].copy()


def test_undo_reset_free_mode_and_overlay(qtbot, nets, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    assert w.brush_slider.isEnabled() and not w.commit_button.isEnabled()
    w.brush_slider.setValue(9)
    assert w.c.brush_size == 9 and w.brush_label.text() == "Brush size: 9"
    drag(qtbot, w, [(10, 20), (40, 20), (60, 20)])
    m1 = w.c.current_mask().copy()
    painted = w.c.render(with_brush=False).copy()
    assert (m1[20, 12:58] == 1).all()
    drag(qtbot, w, [(30, 10), (30, 30)], button=Qt.RightButton)      # erases a piece of the stroke
    erased = w.c.render(with_brush=False).copy()
    assert (w.c.current_mask()[20, 27:34] == 0).all()
    assert not np.array_equal(erased[20, 27:34], painted[20, 27:34])
    qtbot.mouseClick(w.undo_button, Qt.LeftButton)
    wait_idle(qtbot, w)
    assert np.array_equal(w.c.current_mask(), m1)                    # the erased piece is back …
    assert np.array_equal(w.c.render(with_brush=False), painted)      # … and so are its overlay pixels
    # every overlay mode reaches the canvas
    frame = np.asarray(w.c.frames[0])
    seen = []
    for mode in ("fade", "light", "davis"):
        w.combo.setCurrentText(mode)
        assert w.c.overlay_mode == mode
        assert np.array_equal(w.c.render(with_brush=False), overlay(frame, m1, mode, 2))
        seen.append(qimage_array(w.canvas.pixmap()))
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])
    # reset clears the shown mask; undo then falls back to the core's probabilities (the propagated mask)
    propagate(qtbot, w)
    kept = w.c.current_mask().copy()
    assert (kept[20, 12:58] == 1).all()
    qtbot.mouseClick(w.reset_button, Qt.LeftButton)
    assert (w.c.current_mask() == 0).all()
    qtbot.mouseClick(w.undo_button, Qt.LeftButton)
    wait_idle(qtbot, w)
    assert np.array_equal(w.c.current_mask(), kept)


def test_click_mode_and_brush_wheel(qtbot, nets, clip, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    assert w.radio_click.isChecked()                  # the original starts in click mode
    x, y = label_centroid(clip.labels[0], 1)
    click(qtbot, w, x, y)
    m = w.c.current_mask()
    assert m[int(round(y)), int(round(x))] == 1 and set(np.unique(m)) == {0, 1}
    click(qtbot, w, x, y, button=Qt.RightButton)
    assert w.c.current_mask()[int(round(y)), int(round(x))] == 0
    assert "Interaction Click at frame 0." in w.console.toPlainText()
    # number keys above the object count do nothing; the help lists every shortcut
    qtbot.keyClick(w, Qt.Key_7)
    assert w.c.current_object == 1
    box = w.show_help()
    for key, _ in SHORTCUTS:
        assert key in box.text()
    # the mouse wheel sets the free brush (two notches: 3 + 8) and the slider follows
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    p = canvas_point(w, x, y)
    QApplication.sendEvent(w.canvas, QWheelEvent(QPointF(p), QPointF(w.canvas.mapToGlobal(p)), QPoint(0, 0),
                                                 QPoint(0, 240),
                                                 Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False))
    assert w.c.brush_size == 11 and w.brush_slider.value() == 11 and w.brush_label.text() == "Brush size: 11"


def test_click_with_the_real_fbrs_controller(qtbot, nets, clip, video, tmp_path_factory, tmp_path):
    from model.aggregate import aggregate_sbg
    from tests.helpers_gui import seeded_fbrs_controller
    fbrs = seeded_fbrs_controller(tmp_path_factory.mktemp("fbrs_ckpt"))
    w = open_window(qtbot, nets, tmp_path / "ws", fbrs=fbrs, video=str(video))
    qtbot.keyClick(w, Qt.Key_2)
    x, y = label_centroid(clip.labels[0], 2)
    click(qtbot, w, x, y)
    it = w.c.frame.interaction
    assert len(it.clicks) == 1 and it.tar_obj == 2 and fbrs.num_clicks == 1
    # channel 2 = the binary f-BRS map, channel 1 = the (empty) previous probabilities, hard aggregation
    binary = (fbrs.probs > 0.5).float()
    assert set(np.unique(it.out_prob[1].numpy())) <= {0.0, 1.0}
    assert np.array_equal(it.out_prob[1, 0].numpy(), binary[0, 0].numpy())
    assert np.allclose(w.c.frame.mask.numpy(), aggregate_sbg(it.out_prob, keep_bg=True, hard=True).numpy())
    assert set(np.unique(w.c.current_mask())) <= {0, 2}


def test_local_control_and_add_object(qtbot, nets, video, tmp_path):
    w = open_window(qtbot, nets, tmp_path / "ws", video=str(video))
    qtbot.mouseClick(w.radio_free, Qt.LeftButton)
    drag(qtbot, w, [(20, 20), (50, 40), (80, 70)], modifier=Qt.ControlModifier)
    assert w.c.in_local_mode
    assert w.finish_local_button.isEnabled() and not w.run_button.isEnabled() and not w.tl_slider.isEnabled()
    lx, ux, ly, uy = w.c.local.bbox
    assert abs(lx - 20) <= 1 and abs(ux - 80) <= 1 and abs(ly - 20) <= 1 and abs(uy - 70) <= 1
    w.brush_slider.setValue(100)
    drag(qtbot, w, [(0, 25), (30, 25), (60, 25)])        # crop coordinates now
    qtbot.mouseClick(w.finish_local_button, Qt.LeftButton)
    assert not w.c.in_local_mode and w.run_button.isEnabled()
    m = w.c.current_mask()
    assert (m[ly + 3:uy - 2, lx + 3:ux - 2] == 1).all() and (m[:ly] == 0).all()
    qtbot.mouseClick(w.add_object_button, Qt.LeftButton)
    wait_idle(qtbot, w)
    assert w.c.num_objects == 3 and w.c.current_object == 3 and "3 / 3" in w.object_label.text()
    assert w.object_spin.maximum() == 3 and w.object_spin.value() == 3
    w.object_spin.setValue(1)
    assert w.c.current_object == 1
    qtbot.keyClick(w, Qt.Key_2)
    assert w.c.current_object == 2


def test_cancel_resume_and_export(qtbot, nets, tmp_path, monkeypatch):
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
    # the propagation waits before its first frame until the cancel is in: cancelled after exactly 1 frame
    gate, reached = gate_propagation(monkeypatch, w.c.core, after_frames=0)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(reached.is_set, timeout=60_000)
    qtbot.mouseClick(w.cancel_button, Qt.LeftButton)
    gate.set()
    wait_idle(qtbot, w)
    text = w.console.toPlainText()
    assert f"Propagation cancelled after 1 of {T - 1} frames." in text and "Propagation finished!" not in text
    assert w.run_button.isEnabled() and w.c.frame.mask is not None      # it can be propagated again
    assert w.c.core.interacted_frames == {0}
    monkeypatch.undo()
    propagate(qtbot, w)
    assert "Propagation finished!" in w.console.toPlainText()
    masks = w.c.core.np_masks.copy()
    w.close()

    # reopen: resumes from the workspace
    w2 = show_window(qtbot, MainWindow(open_session(args, networks=nets[0], fbrs_controller=FakeFBRS())))
    assert w2.c.resumed and np.array_equal(w2.c.core.np_masks, masks)
    assert "Resumed workspace" in w2.console.toPlainText()

    # Save: the folder picker opens on an existing folder; the export runs on the worker thread
    asked = []
    monkeypatch.setattr(w2, "choose_folder", lambda title, start: asked.append(start) or "")
    qtbot.mouseClick(w2.save_button, Qt.LeftButton)
    assert asked == [ws / "export"] and asked[0].is_dir() and not w2.job_running
    out = tmp_path / "export"
    w2.combo.setCurrentText("light")
    assert w2.start_export(out)
    wait_idle(qtbot, w2)
    m0 = load_mask_png(out / "mask" / "00000.png")
    assert m0.shape == (224, 256) and m0[100, 120] == 1
    assert (out / "overlay" / "00002.png").exists() and (out / "overlay.mp4").stat().st_size > 0
    assert "Done." in w2.console.toPlainText() and "light overlays" in w2.console.toPlainText()


def test_workspace_of_another_video_shows_a_dialog_and_asks_on_close(qtbot, nets, video, tmp_path, monkeypatch):
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
    # closing would lose the edits: the window asks; Cancel keeps it open, Save writes a new workspace
    questions, answers = [], ["cancel", "save"]
    monkeypatch.setattr(w, "ask_unsaved", lambda q: questions.append(q) or answers.pop(0))
    mine = tmp_path / "mine"
    monkeypatch.setattr(w, "choose_folder", lambda title, start: str(mine))
    w.close()
    assert w.isVisible() and len(questions) == 1 and "not saved" in questions[0]
    w.close()
    assert not w.isVisible() and len(questions) == 2
    assert np.array_equal(load_mask_png(mine / "masks" / "00000.png"), w.c.core.np_masks[0])
    assert json.loads((mine / "session.json").read_text())["video"]["frames"] == T
    assert (ws / "session.json").read_bytes() == before
