"""The thin PyQt5 view of the annotation GUI.

Everything here is widgets, signals and painting: user input is forwarded to the Qt-free
:class:`gui.controller.AnnotationController` in image coordinates, and the window shows what the
controller returns (uint8 RGB numpy images, strings, numbers), through public methods only. Every
:class:`gui.jobs.Job` the controller returns (a click, a scribble, a free-paint stroke, undo,
adding an object, propagation, export) runs on a :class:`GeneratorWorker` thread, so the window never
freezes; Cancel closes a propagation or export between frames on that thread.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QObject, Qt, QThread, QTimer, pyqtSignal
from PyQt5.QtGui import QGuiApplication, QImage, QKeySequence, QPixmap
from PyQt5.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QHBoxLayout, QLabel, QMessageBox,
                             QPlainTextEdit, QProgressBar, QPushButton, QRadioButton, QShortcut, QSizePolicy,
                             QSlider, QSpinBox, QVBoxLayout, QWidget)

from gui.controller import AnnotationController, view_to_image
from gui.jobs import Job
from gui.overlay import OVERLAY_MODES

PROCEDURE = ("1. Label all objects in a frame with scribbles / clicks / free-hand drawing. 2. Propagate. "
             "3. Find a frame with an error, correct it and propagate again. 4. Repeat.")
TIPS = ("Ctrl + left-drag selects a local control region (Finish Local to go back). Right button labels "
        "the background. Number keys pick the object (1-Red, 2-Green, 3-Blue, …). Commit only works for "
        "scribbles (S2M): it closes the interaction. Masks are autosaved to the workspace after every "
        "propagation and edit.")

SHORTCUTS = [
    ("1 … 9", "select object 1 … 9 (1-Red, 2-Green, 3-Blue, ...)"),
    ("Left / Right", "previous / next frame"),
    ("Space", "play / pause"),
    ("Left mouse", "positive: click / scribble / paint the current object"),
    ("Right mouse", "negative: background click / scribble / paint"),
    ("Ctrl + left drag", "select a region for local control (Finish Local to go back)"),
    ("Mouse wheel", "brush size (Free mode)"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+R", "reset frame"),
    ("Ctrl+Enter", "commit the scribble interaction"),
    ("Ctrl+P", "propagate"),
    ("Escape", "cancel a running propagation / export"),
    ("Ctrl+N", "add an object"),
    ("Ctrl+S", "export masks, overlays and overlay video at the original resolution"),
    ("Ctrl+= / Ctrl+-", "minimap zoom in / out"),
    ("F1", "this help"),
]


def to_pixmap(image: np.ndarray) -> QPixmap:
    """``H×W×3`` uint8 RGB → QPixmap (the data is copied)."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QPixmap.fromImage(QImage(image.data, w, h, 3 * w, QImage.Format_RGB888).copy())


class GeneratorWorker(QObject):
    """Runs a ``(done, total)`` job on its own thread; ``cancel()`` stops it between steps (a
    cancel that arrives before the first step stops it before any work)."""

    progress = pyqtSignal(int, int)
    finished = pyqtSignal(bool, str)   # completed?, error message ("" if none)

    def __init__(self, steps):
        super().__init__()
        self._steps = steps
        self._cancel = False

    def cancel(self) -> None:
        self._cancel = True

    def run(self) -> None:
        completed, error = False, ""
        try:
            while not self._cancel:
                step = next(self._steps, None)
                if step is None:
                    completed = True
                    break
                self.progress.emit(int(step[0]), int(step[1]))
        except Exception as e:   # shown in the console: a failing step must not kill the GUI
            error = f"{type(e).__name__}: {e}"
        finally:
            try:
                self._steps.close()   # cancels on this thread; runs the generator's cleanup
            except Exception as e:
                error = error or f"{type(e).__name__}: {e}"
        self.finished.emit(completed, error)


class Canvas(QLabel):
    """The main image; forwards mouse input in label coordinates."""

    def __init__(self, window: "MainWindow"):
        super().__init__()
        self.window_ = window
        self.setAlignment(Qt.AlignCenter)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(100, 100)
        self.setMouseTracking(True)

    def mousePressEvent(self, e):
        self.window_.on_press(e)

    def mouseMoveEvent(self, e):
        self.window_.on_motion(e)

    def mouseReleaseEvent(self, e):
        self.window_.on_release(e)

    def wheelEvent(self, e):
        self.window_.on_wheel(e)


class MainWindow(QWidget):
    log_line = pyqtSignal(str)   # console lines from any thread, appended on the GUI thread

    def __init__(self, controller: AnnotationController):
        super().__init__()
        self.c = controller
        self.worker: GeneratorWorker | None = None
        self.thread_: QThread | None = None
        self.dialogs: list[QMessageBox] = []     # non-modal dialogs shown (kept for inspection)
        self._job = ""
        self.setWindowTitle("MiVOS")
        self._build()
        for line in self.c.console:
            self.console.appendPlainText(line)
        self.log_line.connect(self.console.appendPlainText)
        self.c.set_log_sink(self._on_log)
        if self.c.workspace_error:
            self.show_message("Workspace not used", self.c.workspace_error, QMessageBox.Warning)
        self.refresh(full=True)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        c = self.c
        self.setGeometry(100, 100, max(c.width, 640) + 260, max(c.height, 360) + 260)
        self.canvas = Canvas(self)

        # right panel
        self.minimap = QLabel()
        self.minimap.setMinimumSize(150, 150)
        self.minimap.setAlignment(Qt.AlignTop)
        self.zoom_p_button = QPushButton("Zoom +")
        self.zoom_m_button = QPushButton("Zoom -")
        self.finish_local_button = QPushButton("Finish Local")
        self.add_object_button = QPushButton("Add object")
        self.help_button = QPushButton("Help")
        self.zoom_p_button.clicked.connect(self.on_zoom_plus)
        self.zoom_m_button.clicked.connect(self.on_zoom_minus)
        self.finish_local_button.clicked.connect(self.on_finish_local)
        self.add_object_button.clicked.connect(self.on_add_object)
        self.help_button.clicked.connect(self.show_help)
        self.console = QPlainTextEdit()
        self.console.setReadOnly(True)
        self.console.setMinimumHeight(100)
        self.object_label = QLabel()
        # number keys reach objects 1-9; the spin box reaches any object
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, self.c.num_objects)
        self.object_spin.setValue(self.c.current_object)
        self.object_spin.valueChanged.connect(self.on_number_key)

        right = QVBoxLayout()
        right.setAlignment(Qt.AlignTop)
        right.addWidget(QLabel("Minimap"))
        row = QHBoxLayout()
        for b in (self.zoom_p_button, self.zoom_m_button, self.finish_local_button):
            row.addWidget(b)
        right.addLayout(row)
        right.addWidget(self.minimap)
        row = QHBoxLayout()
        row.addWidget(self.object_label)
        row.addWidget(self.object_spin)
        right.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.add_object_button)
        row.addWidget(self.help_button)
        right.addLayout(row)
        # one compact line (the full procedure and tips are in the help): the panel fits small screens
        tip = QLabel("Label every object on a frame, Propagate, fix a wrong frame, propagate again. "
                     "F1: help and shortcuts.")
        tip.setWordWrap(True)
        right.addWidget(tip)
        right.addWidget(self.console)

        right_panel = QWidget()
        right_panel.setLayout(right)
        right_panel.setMaximumWidth(360)
        draw_area = QHBoxLayout()
        draw_area.addWidget(self.canvas, 4)
        draw_area.addWidget(right_panel, 1)

        # timeline
        self.tl_slider = QSlider(Qt.Horizontal)
        self.tl_slider.setMinimum(0)
        self.tl_slider.setMaximum(c.num_frames - 1)
        self.tl_slider.setValue(c.cursor)
        self.tl_slider.setTickPosition(QSlider.TicksBelow)
        self.tl_slider.setTickInterval(1)
        self.tl_slider.valueChanged.connect(self.on_slide)

        # navigation row
        self.lcd = QLabel(c.lcd_text())
        self.lcd.setMinimumWidth(90)
        self.play_button = QPushButton("Play")
        self.play_button.clicked.connect(self.on_play)
        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(self.on_play_tick)

        self.radio_scribble = QRadioButton("Scribble")
        self.radio_click = QRadioButton("Click")
        self.radio_free = QRadioButton("Free")
        self.mode_group = QButtonGroup(self)
        for r in (self.radio_scribble, self.radio_click, self.radio_free):
            self.mode_group.addButton(r)
        {"Scribble": self.radio_scribble, "Click": self.radio_click, "Free": self.radio_free}[c.mode].setChecked(True)
        for r in (self.radio_scribble, self.radio_click, self.radio_free):
            r.toggled.connect(self.on_mode)
        self.brush_label = QLabel()
        self.brush_slider = QSlider(Qt.Horizontal)
        self.brush_slider.setMinimum(1)
        self.brush_slider.setMaximum(100)
        self.brush_slider.setValue(c.free_brush_size)
        self.brush_slider.setTickPosition(QSlider.TicksBelow)
        self.brush_slider.setTickInterval(2)
        self.brush_slider.setMinimumWidth(200)
        self.brush_slider.valueChanged.connect(self.on_brush)
        interact_box = QVBoxLayout()
        top = QHBoxLayout()
        for w in (self.radio_scribble, self.radio_click, self.radio_free, self.brush_label):
            top.addWidget(w)
        interact_box.addLayout(top)
        interact_box.addWidget(self.brush_slider)

        self.undo_button = QPushButton("Undo")
        self.reset_button = QPushButton("Reset Frame")
        self.undo_button.clicked.connect(self.on_undo)
        self.reset_button.clicked.connect(self.on_reset)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMinimumWidth(200)
        self.progress.setAlignment(Qt.AlignCenter)
        self.progress.setFormat("Idle")
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.on_cancel)
        self.combo = QComboBox()
        self.combo.addItems(list(OVERLAY_MODES))
        self.combo.setCurrentText(c.overlay_mode)
        self.combo.currentTextChanged.connect(self.on_overlay_mode)
        self.commit_button = QPushButton("Commit")
        self.run_button = QPushButton("Propagate")
        self.save_button = QPushButton("Save")
        self.commit_button.clicked.connect(self.on_commit)
        self.run_button.clicked.connect(self.on_run)
        self.save_button.clicked.connect(self.on_save)

        # two rows, so that the window fits a 1280-px screen
        navi = QHBoxLayout()
        navi.addWidget(self.lcd)
        navi.addWidget(self.play_button)
        navi.addLayout(interact_box)
        navi.addStretch(1)
        navi.addWidget(self.undo_button)
        navi.addWidget(self.reset_button)
        navi.addWidget(self.commit_button)
        jobs = QHBoxLayout()
        jobs.addWidget(self.progress, 1)
        jobs.addWidget(self.cancel_button)
        jobs.addStretch(1)
        jobs.addWidget(QLabel("Overlay Mode"))
        jobs.addWidget(self.combo)
        jobs.addWidget(self.run_button)
        jobs.addWidget(self.save_button)

        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout()
        layout.addLayout(draw_area)
        layout.addWidget(self.tl_slider)
        layout.addLayout(navi)
        layout.addLayout(jobs)
        layout.addWidget(self.status)
        self.setLayout(layout)

        # shortcuts
        for k in range(1, 10):
            QShortcut(QKeySequence(str(k)), self).activated.connect(partial(self.on_number_key, k))
        bindings = [(Qt.Key_Left, self.on_prev), (Qt.Key_Right, self.on_next), (Qt.Key_Space, self.on_play),
                    ("Ctrl+Z", self.on_undo), ("Ctrl+R", self.on_reset), ("Ctrl+Return", self.on_commit),
                    ("Ctrl+P", self.on_run), (Qt.Key_Escape, self.on_cancel), ("Ctrl+N", self.on_add_object),
                    ("Ctrl+S", self.on_save), ("Ctrl+=", self.on_zoom_plus), ("Ctrl+-", self.on_zoom_minus),
                    (Qt.Key_F1, self.show_help)]
        for key, slot in bindings:
            QShortcut(QKeySequence(key), self).activated.connect(slot)

        # the status line shows memory in use: refresh it now and then
        self.status_timer = QTimer(self)
        self.status_timer.timeout.connect(self.update_status)
        self.status_timer.start(1000)

    # ------------------------------------------------------------------ drawing
    def refresh(self, full: bool = False) -> None:
        c = self.c
        rendered = c.render()
        self.canvas.setPixmap(to_pixmap(rendered).scaled(self.canvas.size(), Qt.KeepAspectRatio,
                                                         Qt.FastTransformation))
        self.minimap.setPixmap(to_pixmap(c.minimap(rendered)).scaled(self.minimap.size(), Qt.KeepAspectRatio,
                                                             Qt.FastTransformation))
        if full:
            self.lcd.setText(c.lcd_text())
            if self.tl_slider.value() != c.cursor:
                self.tl_slider.blockSignals(True)
                self.tl_slider.setValue(c.cursor)
                self.tl_slider.blockSignals(False)
            self.brush_label.setText("Brush size: %d" % c.brush_size)
            # keep the widgets in step with the controller (it may be driven from elsewhere)
            radio = {"Scribble": self.radio_scribble, "Click": self.radio_click, "Free": self.radio_free}[c.mode]
            for widget, setter, value in ((radio, radio.setChecked, True),
                                          (self.brush_slider, self.brush_slider.setValue, c.free_brush_size),
                                          (self.combo, self.combo.setCurrentText, c.overlay_mode),
                                          (self.object_spin, partial(self._set_spin, c.num_objects),
                                           c.current_object)):
                widget.blockSignals(True)
                setter(value)
                widget.blockSignals(False)
            col = c.colours()[c.current_object]
            self.object_label.setText(f"Object: {c.current_object} / {c.num_objects}")
            self.object_label.setStyleSheet(f"color: rgb({col[0]},{col[1]},{col[2]}); font-weight: bold")
            self._update_enabled()
            self.update_status()

    def _set_spin(self, maximum: int, value: int) -> None:
        self.object_spin.setRange(1, maximum)
        self.object_spin.setValue(value)

    def _update_enabled(self) -> None:
        en = self.c.enabled()
        self.tl_slider.setEnabled(en["navigate"])
        self.lcd.setEnabled(en["navigate"])
        self.play_button.setEnabled(en["play"])
        self.run_button.setEnabled(en["propagate"])
        self.zoom_p_button.setEnabled(en["zoom"])
        self.zoom_m_button.setEnabled(en["zoom"])
        self.finish_local_button.setEnabled(en["finish_local"])
        self.commit_button.setEnabled(en["commit"])
        self.brush_slider.setEnabled(en["brush"])
        self.undo_button.setEnabled(en["undo"])
        self.reset_button.setEnabled(en["reset"])
        self.add_object_button.setEnabled(en["add_object"])
        self.object_spin.setEnabled(en["object"])
        self.save_button.setEnabled(en["export"])
        self.cancel_button.setEnabled(en["cancel"] and self.worker is not None)
        for r in (self.radio_scribble, self.radio_click, self.radio_free):
            r.setEnabled(en["mode"])
        self.combo.setEnabled(en["overlay"])
        if not en["play"] and self.play_timer.isActive():
            self.on_play()

    def update_status(self) -> None:
        self.status.setText(self.c.status_text())
        self.progress.setFormat(self.c.activity_text())
        done, total = self.c.progress
        self.progress.setValue(int(100 * done / total) if total > 0 else 0)

    def _on_log(self, line: str) -> None:
        print(line, flush=True)
        # lines from the worker thread are queued to the GUI thread by the signal
        self.log_line.emit(line)

    def show_message(self, title: str, text: str, icon=QMessageBox.Information) -> QMessageBox:
        """A non-modal dialog (the session keeps running)."""
        box = QMessageBox(icon, title, text, QMessageBox.Ok, self)
        box.setModal(False)
        box.show()
        self.dialogs.append(box)
        return box

    def show_help(self) -> QMessageBox:
        rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in SHORTCUTS)
        box = self.show_message("Help", f"<p>{PROCEDURE}</p><p>{TIPS}</p><table>{rows}</table>")
        box.setTextFormat(Qt.RichText)
        return box

    # ------------------------------------------------------------------ mouse
    def _image_pos(self, e) -> tuple[float, float]:
        w, h = self.c.view_size
        return view_to_image(e.x(), e.y(), self.canvas.width(), self.canvas.height(), w, h)

    def on_press(self, e) -> None:
        x, y = self._image_pos(e)
        ctrl = bool(e.modifiers() & Qt.ControlModifier)
        self.c.press(x, y, positive=(e.button() == Qt.LeftButton), ctrl=ctrl)
        self.refresh()

    def on_motion(self, e) -> None:
        x, y = self._image_pos(e)
        self.c.move(x, y)
        self.refresh()

    def on_release(self, e) -> None:
        x, y = self._image_pos(e)
        self._start_job(self.c.release(x, y))
        self.refresh(full=True)

    def on_wheel(self, e) -> None:
        x, y = self._image_pos(e)
        self.c.move(x, y)
        self.c.wheel(e.angleDelta().y())
        self.refresh(full=True)

    def keyPressEvent(self, e) -> None:
        # fallback for key events that reach the window without going through the shortcut map
        # (e.g. when the platform gives no window activation)
        if Qt.Key_1 <= e.key() <= Qt.Key_9 and not e.modifiers():
            self.on_number_key(e.key() - Qt.Key_0)
        elif e.key() == Qt.Key_Left:
            self.on_prev()
        elif e.key() == Qt.Key_Right:
            self.on_next()
        else:
            super().keyPressEvent(e)

    # ------------------------------------------------------------------ controls
    def on_slide(self, value: int) -> None:
        self.c.set_frame(value)
        self.refresh(full=True)

    def on_prev(self) -> None:
        if self.c.enabled()["navigate"]:
            self.tl_slider.setValue(max(0, self.c.cursor - 1))

    def on_next(self) -> None:
        if self.c.enabled()["navigate"]:
            self.tl_slider.setValue(min(self.c.num_frames - 1, self.c.cursor + 1))

    def on_play(self) -> None:
        if self.play_timer.isActive():
            self.play_timer.stop()
            self.play_button.setText("Play")
        elif self.c.enabled()["play"]:
            self.play_timer.start(1000 // 25)
            self.play_button.setText("Pause")

    def on_play_tick(self) -> None:
        if not self.c.enabled()["navigate"]:
            return
        self.tl_slider.setValue(0 if self.c.cursor >= self.c.num_frames - 1 else self.c.cursor + 1)

    def on_mode(self) -> None:
        for r, m in ((self.radio_scribble, "Scribble"), (self.radio_click, "Click"), (self.radio_free, "Free")):
            if r.isChecked():
                self.c.set_mode(m)
        self.refresh(full=True)

    def on_brush(self, value: int) -> None:
        self.c.set_brush_size(value)
        self.refresh(full=True)

    def on_number_key(self, k: int) -> None:
        if k <= self.c.num_objects:
            self.c.set_object(k)
            self.refresh(full=True)

    def on_overlay_mode(self, mode: str) -> None:
        self.c.set_overlay_mode(mode)
        self.refresh()

    def on_undo(self) -> None:
        self._start_job(self.c.undo())
        self.refresh(full=True)

    def on_reset(self) -> None:
        self.c.reset_frame()
        self.refresh(full=True)

    def on_commit(self) -> None:
        if self.c.enabled()["commit"]:
            self.c.commit()
            self.refresh(full=True)

    def on_zoom_plus(self) -> None:
        self.c.zoom_in()
        self.refresh()

    def on_zoom_minus(self) -> None:
        self.c.zoom_out()
        self.refresh()

    def on_finish_local(self) -> None:
        self.c.finish_local()
        self.refresh(full=True)

    def on_add_object(self) -> None:
        if self.c.enabled()["add_object"]:
            self._start_job(self.c.add_object())
            self.refresh(full=True)

    # ------------------------------------------------------------------ jobs on the worker
    def _start_job(self, job: Job | None) -> bool:
        """Run a controller job on the worker thread (one at a time: the controller refuses to make a
        second while one runs)."""
        if job is None:
            return False
        if self.worker is not None:     # cannot happen while the controller is busy; never lose the job
            job.close()
            return False
        self._job = job.name
        self.worker = GeneratorWorker(job)
        self.thread_ = QThread(self)
        self.worker.moveToThread(self.thread_)
        self.thread_.started.connect(self.worker.run)
        self.worker.progress.connect(self._on_progress)
        self.worker.finished.connect(self._on_job_finished)
        self.thread_.start()
        self.refresh(full=True)
        return True

    def _on_progress(self, done: int, total: int) -> None:
        self.refresh(full=True)

    def _on_job_finished(self, completed: bool, error: str) -> None:
        self.thread_.quit()
        self.thread_.wait()
        self.worker.deleteLater()
        self.thread_.deleteLater()
        self.worker = self.thread_ = None
        if error:
            self.c.log(f"{self._job} failed: {error}")
            self.show_message(f"{self._job} failed", error, QMessageBox.Critical)
        self.refresh(full=True)

    @property
    def job_running(self) -> bool:
        return self.worker is not None

    def on_run(self) -> None:
        if self.c.enabled()["propagate"]:
            self._start_job(self.c.propagate())

    def on_cancel(self) -> None:
        if self.worker is not None and self.c.enabled()["cancel"]:
            self.worker.cancel()
            self.c.log(f"{self._job} cancelling…")

    def choose_folder(self, title: str, start: Path) -> str:
        """A folder picker opened on ``start`` (an existing folder); "" when the user cancels."""
        return QFileDialog.getExistingDirectory(self, title, str(start))

    def on_save(self) -> None:
        if not self.c.enabled()["export"]:
            return
        folder = self.choose_folder("Export masks and overlays to", self.c.default_export_dir())
        if folder:
            self.start_export(folder)

    def start_export(self, folder: str | Path) -> bool:
        return self._start_job(self.c.export(folder))

    def ask_unsaved(self, question: str) -> str:
        """``"save"``, ``"discard"`` or ``"cancel"`` (a modal question; without a screen nobody can
        answer, so the session closes as asked and the console says what was not saved)."""
        if QGuiApplication.platformName() in ("offscreen", "minimal"):
            self.c.log(f"Closing without a display: {question} (not asked)")
            return "discard"
        answer = QMessageBox.question(self, "Unsaved masks", question,
                                      QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(answer, "cancel")

    def closeEvent(self, e) -> None:
        if self.worker is not None:
            # a propagation keeps the frames done so far; the session is then idle for the question
            self.worker.cancel()
            self.thread_.quit()
            self.thread_.wait(10000)
        question = self.c.close_question()
        while question is not None:
            answer = self.ask_unsaved(question)
            if answer == "cancel":
                e.ignore()
                return
            if answer == "discard":
                break
            folder = self.choose_folder("Save the session to a new workspace folder", Path.cwd())
            if folder and self.c.save_workspace_to(folder):
                break
        self.play_timer.stop()
        self.status_timer.stop()
        super().closeEvent(e)
