"""The Qt-free brain of the annotation GUI.

:class:`AnnotationController` holds the session: the :class:`~inference_core.InferenceCore` (the only
owner of the frames' probabilities, masks and object count), the interaction networks (S2M, f-BRS),
the edit target (:mod:`gui.targets`: the whole frame, or a local crop), the timers, the console and the
workspace. The view (``gui/main_window.py``) forwards user input in image coordinates through public
methods and shows what :meth:`AnnotationController.render` / :meth:`minimap` return: **no tensor ever
crosses to the view** — it gets uint8 RGB numpy images, strings and plain numbers.

Anything that runs a network is a :class:`Job`: the method that starts it does the cheap bookkeeping on
the calling (GUI) thread and returns the job; iterating the job runs the work (the view does it on its
worker thread, scripts and tests with :meth:`Job.run`). From a job's creation to its end the controller
is busy (:attr:`activity` says what runs); while busy it refuses new input with a console line, and
during a propagation the user may still browse frames (each shows its newest result).

State machine and semantics follow the original GUI: clicks (f-BRS, per object), scribbles (S2M,
several objects per interaction, Commit), free painting, Undo / Reset Frame, local control (Ctrl-drag a
region, Finish Local), Propagate. Beyond the original: cancellable propagation, autosave and resume,
objects added mid-session, export at the video's original resolution.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from gui.export import export_steps
from gui.jobs import ACTIVITY, BROWSABLE, Job
from gui.overlay import OVERLAY_MODES, overlay
from gui.targets import EditTarget, FrameTarget, LocalTarget, stroke_canvas
from gui.workspace import SessionState, Workspace, WorkspaceError
from inference_core.interaction.interactions import (ClickInteraction, FreeInteraction, LocalInteraction,
                                                     ScribbleInteraction, bbox_from_points)
from model.aggregate import hard_labels
from util.memory import current_rss_mib
from util.palette import object_colours
from util.tensor_util import pad_divide_by, unpad

MODES = ("Click", "Scribble", "Free")
DEFAULT_BRUSH = 3
ZOOM_DEFAULT, ZOOM_STEP, ZOOM_MIN, ZOOM_MAX = 150, 25, 50, 300
class Timer:
    """Accumulating, pausable wall-clock timer (the console's A/U readouts)."""

    def __init__(self):
        self._total = 0.0
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self._total += time.perf_counter() - self._since
            self._since = None

    @property
    def running(self) -> bool:
        return self._since is not None

    def seconds(self) -> float:
        return self._total + (time.perf_counter() - self._since if self._since is not None else 0.0)


def memory_in_use_mb() -> float:
    """Resident memory of this process in MiB (the status line)."""
    return current_rss_mib()


def view_to_image(x: float, y: float, label_w: int, label_h: int, img_w: int, img_h: int) -> tuple[float, float]:
    """Map a position on a label showing an ``img_w×img_h`` image scaled with KeepAspectRatio and
    centred, to image coordinates clamped inside the image (the original's ``get_scaled_pos``)."""
    ratio = min(label_h / img_h, label_w / img_w)
    x, y = x / ratio, y / ratio
    x -= (label_w / ratio - img_w) / 2
    y -= (label_h / ratio - img_h) / 2
    return max(0.0, min(img_w - 1.0, x)), max(0.0, min(img_h - 1.0, y))


class AnnotationController:
    """Everything the GUI does, without Qt.

    ``core``: an InferenceCore over ``frames`` (a frame source, ``frames[t]`` → ``H×W×3`` uint8);
    ``s2m_factory(num_objects)`` builds the scribble controller; ``fbrs``: the click controller or
    ``None`` (click mode then tells the user it is unavailable); ``log``: called with every console line
    (from whichever thread logs); ``amp``: fp16 autocast of the interaction networks on CUDA;
    ``device_text``: the device / precision line shown in the status line and logged once.
    """

    def __init__(self, core, frames, s2m_factory: Callable[[int], object], fbrs=None,
                 workspace: Workspace | None = None, log: Callable[[str], None] | None = None,
                 amp: bool = False, device_text: str = ""):
        self.core = core
        self.amp = amp
        self.frames = frames
        self.s2m_factory = s2m_factory
        self._s2m: object | None = None
        self.fbrs = fbrs
        self.workspace = workspace
        self.workspace_error: str | None = None
        self._log_sink = log
        self.console: list[str] = []
        self.device_text = device_text

        self.num_frames = len(frames)
        self.height, self.width = int(frames.size[1]), int(frames.size[0])
        self.cursor = 0
        self.current_object = 1
        self.mode = "Click"
        self.free_brush_size = DEFAULT_BRUSH
        self.overlay_mode = "davis"
        self.zoom_pixels = ZOOM_DEFAULT
        self.activity: str | None = None            # the job running now (a key of ACTIVITY)
        self.progress: tuple[int, int] = (0, 0)     # (done, total) of the running job
        self._refused_during: str | None = None
        self.last_speed_fps: float | None = None
        self.last_propagation_s: float | None = None
        self.unsaved_edits = False                  # edits not in any workspace (autosave off or failed)
        self._live: dict[int, np.ndarray] = {}      # t → newest mask of a running propagation

        self.algo_timer, self.user_timer = Timer(), Timer()
        self.waiting_to_start = True

        self.frame = FrameTarget(core, self.cursor)
        self.local: LocalTarget | None = None
        self.minimap_in_local: np.ndarray | None = None

        # pointer state
        self.pressed = False
        self.ctrl_drag = False
        self.right_click = False
        self.local_start = (0.0, 0.0)
        self.hover = (self.width / 2, self.height / 2)
        self._viz_cache: tuple | None = None

        self.resumed = False
        if workspace is not None:
            self._open_workspace()
        if device_text:
            self.log(device_text)
        self.log("Initialized.")

    # ------------------------------------------------------------------ derived state
    @property
    def num_objects(self) -> int:
        """The object count; the core owns it."""
        return int(self.core.num_objects)

    @property
    def s2m(self):
        """The scribble controller for the current object count (rebuilt when the count changed)."""
        if self._s2m is None or getattr(self._s2m, "num_objects", self.num_objects) != self.num_objects:
            self._s2m = self.s2m_factory(self.num_objects)
        return self._s2m

    @property
    def target(self) -> EditTarget:
        """What the user edits now: the local crop in local control, else the frame."""
        return self.local if self.local is not None else self.frame

    @property
    def in_local_mode(self) -> bool:
        return self.local is not None

    @property
    def busy(self) -> bool:
        return self.activity is not None

    @property
    def browsing_allowed(self) -> bool:
        return self.local is None and (self.activity is None or self.activity in BROWSABLE)

    def _net_context(self) -> contextlib.ExitStack:
        """No autograd, and fp16 autocast on CUDA unless --no_amp (as the original). Thread-local:
        entered on whichever thread runs the networks, never across a yield."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        if self.amp:
            stack.enter_context(torch.autocast(device_type="cuda"))
        return stack

    # ------------------------------------------------------------------ jobs
    def _begin(self, kind: str) -> None:
        self.activity = kind
        self.progress = (0, 0)
        self._refused_during = None

    def _end(self) -> None:
        self.activity = None
        self.progress = (0, 0)

    def _refuse_if_busy(self) -> bool:
        """True (and one console line per job) when a job runs: the input is not taken."""
        if self.activity is None:
            return False
        if self._refused_during != self.activity:
            self._refused_during = self.activity
            self.log(f"Busy ({ACTIVITY[self.activity]}): input ignored until it finishes.")
        return True

    # ------------------------------------------------------------------ console / status
    def set_log_sink(self, sink: Callable[[str], None] | None) -> None:
        """Where every later console line goes too (the view's console; any thread)."""
        self._log_sink = sink

    def log(self, text: str) -> None:
        line = "[A: %03.2f, U: %03.2f]: %s" % (self.algo_timer.seconds(), self.user_timer.seconds(), text)
        self.console.append(line)
        if self._log_sink is not None:
            self._log_sink(line)

    def _start_timers(self) -> None:
        if self.waiting_to_start:
            self.waiting_to_start = False
            self.algo_timer.start()
            self.user_timer.start()
            self.log("Timers started.")

    def activity_text(self) -> str:
        """What runs now, for the progress bar: ``"Idle"``, ``"f-BRS click…"``, ``"Propagating… 3/10"``."""
        if self.activity is None:
            return "Idle"
        done, total = self.progress
        return ACTIVITY[self.activity] + (f" {done}/{total}" if total > 0 else "")

    def status_text(self) -> str:
        speed = "–" if self.last_speed_fps is None else f"{self.last_speed_fps:.1f} frames/s"
        mem = memory_in_use_mb()
        local = " | LOCAL" if self.in_local_mode else ""
        device = getattr(self.core, "device", None)
        gpu = ""
        if device is not None and getattr(device, "type", "") == "cuda":
            gpu = f" (GPU {torch.cuda.memory_allocated(device) / 2 ** 20:.0f} MiB)"
        where = f" | {self.device_text}" if self.device_text else ""
        return (f"{self.activity_text()} | Frame {self.cursor} / {self.num_frames - 1} | Object "
                f"{self.current_object} / {self.num_objects} | {self.mode} | last propagation: {speed}"
                f" | memory: {mem:.0f} MiB{gpu}{where}{local}")

    def lcd_text(self) -> str:
        return "{: 3d} / {: 3d}".format(self.cursor, self.num_frames - 1)

    @property
    def brush_size(self) -> int:
        # clicks and scribbles have a fixed 3-px brush; the slider only drives free painting
        return self.free_brush_size if self.mode == "Free" else DEFAULT_BRUSH

    def enabled(self) -> dict[str, bool]:
        """Which controls the view should enable (the one place that decides)."""
        idle = self.activity is None
        frame_idle = idle and not self.in_local_mode
        browse = self.browsing_allowed
        return {"navigate": browse, "play": browse, "propagate": frame_idle, "zoom": True,
                "finish_local": self.in_local_mode and idle,
                "commit": self.mode == "Scribble" and idle,
                "brush": self.mode == "Free" and idle, "mode": idle, "object": idle,
                "undo": idle, "reset": frame_idle, "draw": idle, "add_object": frame_idle,
                "export": frame_idle, "overlay": True,
                "cancel": self.activity in ("propagate", "export")}

    # ------------------------------------------------------------------ workspace
    def _open_workspace(self) -> None:
        ws = self.workspace
        try:
            state = ws.open(self.frames.identity(), (self.width, self.height))
        except WorkspaceError as e:
            self.workspace_error = str(e)
            self.log(f"Workspace not used: {e}")
            return
        if state is None:
            ws.save_session(self.num_objects, 0, [], None)
            self.log(f"New workspace {ws.root}; masks are autosaved there after every propagation.")
            return
        self._resume(state)

    def _resume(self, state: SessionState) -> None:
        while self.num_objects < state.num_objects:
            self.core.add_object()
        for t, mask in state.masks.items():
            if mask.max() > 0:
                # the soft probabilities are not saved (too large for long videos): the hard mask stands in
                self.core.restore_frame(t, self._onehot(mask))
        self.core.mark_interacted(t for t in state.interacted if 0 <= t < self.num_frames)
        self.cursor = min(max(state.cursor, 0), self.num_frames - 1)
        if state.pending_frame is not None and state.pending_frame in state.masks:
            # an interaction that was not propagated before the session ended: propagate-able again
            self.cursor = int(state.pending_frame)
            self.frame.move_to(self.cursor)
            self.frame.set_mask(self._onehot(state.masks[self.cursor]))
        self.frame.move_to(self.cursor)
        self.resumed = True
        self._viz_cache = None
        self.log(f"Resumed workspace {self.workspace.root}: {len(state.masks)} masks, {self.num_objects} objects.")

    def _onehot(self, mask: np.ndarray) -> torch.Tensor:
        """``H×W`` labels → padded one-hot probabilities ``(K+1)×1×H'×W'`` (pad area = background)."""
        m = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        oh = torch.nn.functional.one_hot(m.clamp(max=self.num_objects), self.num_objects + 1)
        oh = oh.permute(2, 0, 1).unsqueeze(1).float()
        oh, _ = pad_divide_by(oh, 16)
        oh[0] = torch.where(oh[1:].sum(0) == 0, torch.ones_like(oh[0]), oh[0])
        return oh.to(self.core.get_image(0).device)

    def autosave(self, frames=None) -> None:
        """Write the changed masks of ``frames`` (default all) and the session to the workspace."""
        self.unsaved_edits = True
        ws = self.workspace
        if ws is None or not ws.writable:
            return
        try:
            n = ws.save_masks(self.core.np_masks, frames)
            ws.save_session(self.num_objects, self.cursor, self.core.interacted_frames, self.frame.mask_frame)
        except OSError as e:
            self.log(f"Autosave failed ({type(e).__name__}: {e}); check that {ws.root} is writable.")
            return
        self.unsaved_edits = False
        if frames is None:
            self.log(f"Autosaved {n} changed masks to {ws.mask_dir}.")

    def close_question(self) -> str | None:
        """What to ask before the window closes, or ``None`` when nothing would be lost."""
        if not self.unsaved_edits:
            return None
        if self.workspace is None:
            why = "this session has no workspace"
        elif self.workspace_error:
            why = f"autosave to {self.workspace.root} is off for this session: it cannot be used for this video"
        else:
            why = "the last autosave failed"
        return (f"The masks of this session are not saved ({why}). Save them to a new workspace folder "
                "before closing?")

    def save_workspace_to(self, folder: str | os.PathLike) -> bool:
        """Move the session to a new workspace ``folder`` (empty, or this video's) and save everything
        there. Returns False (with a console line) when that folder cannot be used."""
        ws = Workspace(Path(folder))
        try:
            ws.root.mkdir(parents=True, exist_ok=True)
            ws.open(self.frames.identity(), (self.width, self.height))
        except (WorkspaceError, OSError) as e:
            self.log(f"Cannot save there: {e}")
            return False
        self.workspace, self.workspace_error = ws, None
        self.autosave()
        return not self.unsaved_edits

    def default_export_dir(self) -> Path:
        """An existing folder for the export dialog: ``<workspace>/export`` (created) when the
        workspace is this session's, else the current folder."""
        ws = self.workspace
        if ws is not None and ws.writable:
            folder = ws.root / "export"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                return folder
            except OSError:
                pass
        return Path.cwd()

    # ------------------------------------------------------------------ frame / object / mode
    def set_frame(self, t: int) -> None:
        """Show frame ``t``. While a propagation or export runs the user may browse (the job is not
        disturbed); in local control or during an interaction the frame stays."""
        t = int(min(max(t, 0), self.num_frames - 1))
        if not self.browsing_allowed:
            return
        if self.activity is None:
            self._start_timers()
            self.frame.move_to(t)
        self.cursor = t
        self._viz_cache = None

    def set_object(self, k: int) -> None:
        if not 1 <= k <= self.num_objects or k == self.current_object or self._refuse_if_busy():
            return
        self.current_object = int(k)
        if self.fbrs is not None:
            self.fbrs.unanchor()
        self.log("Current object changed to %d!" % k)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown interaction mode {mode!r}; use one of {', '.join(MODES)}")
        if self._refuse_if_busy():
            return
        self.mode = mode

    def set_brush_size(self, size: int) -> None:
        self.free_brush_size = int(min(max(size, 1), 100))
        it = self.target.interaction
        if isinstance(it, FreeInteraction) and self.activity is None:
            it.set_size(self.free_brush_size)

    def wheel(self, delta_y: int) -> None:
        """Mouse wheel: brush size += ``delta_y // 30`` in Free mode (≈ ±4 per notch)."""
        if self.mode == "Free":
            self.set_brush_size(self.free_brush_size + int(delta_y) // 30)

    def set_overlay_mode(self, mode: str) -> None:
        if mode not in OVERLAY_MODES:
            raise ValueError(f"unknown overlay mode {mode!r}; use one of {', '.join(OVERLAY_MODES)}")
        self.overlay_mode = mode
        self._viz_cache = None

    def zoom_in(self) -> None:
        self.zoom_pixels = max(ZOOM_MIN, self.zoom_pixels - ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_pixels = min(ZOOM_MAX, self.zoom_pixels + ZOOM_STEP)

    def add_object(self) -> Job | None:
        """Add an object mid-session (not in local control, not while busy). The core re-encodes the
        interactions' memory for the new count: a job."""
        if self.in_local_mode:
            self.log("Finish local control before adding an object.")
            return None
        if self._refuse_if_busy():
            return None
        self.frame.reset()

        def steps():
            with self._net_context():
                self.core.add_object()
            if self.frame.mask is not None:
                self.frame.mask = torch.cat([self.frame.mask, torch.zeros_like(self.frame.mask[:1])], 0)
            self.current_object = self.num_objects
            if self.fbrs is not None:
                self.fbrs.unanchor()
            self.log(f"Added object {self.num_objects}; it is now the current object.")
            self.autosave(frames=[])
            yield 1, 1

        return Job(self, "add_object", steps)

    # ------------------------------------------------------------------ display
    @property
    def view_size(self) -> tuple[int, int]:
        """(w, h) of the image the canvas shows now (the crop in local control)."""
        return self.target.width, self.target.height

    def current_mask(self) -> np.ndarray:
        """``H×W`` uint8 labels of the shown frame (working resolution); during a propagation the
        newest result of that frame."""
        live = self._live.get(self.cursor)
        return live if live is not None else np.asarray(self.core.np_masks[self.cursor])

    def _viz(self) -> np.ndarray:
        # read the cache once: the worker thread may reset it while the GUI thread draws
        cache = self._viz_cache
        local = self.local
        if local is not None:
            key = ("local", self.overlay_mode, hash(local.np_mask.tobytes()))
            if cache is None or cache[0] != key:
                cache = (key, overlay(local.view_image, local.np_mask, self.overlay_mode, self.num_objects))
        else:
            mask = np.array(self.current_mask())
            key = ("global", self.cursor, self.overlay_mode, hash(mask.tobytes()))
            if cache is None or cache[0] != key:
                cache = (key, overlay(np.asarray(self.frames[self.cursor]), mask, self.overlay_mode,
                                      self.num_objects))
        self._viz_cache = cache
        return cache[1]

    def render(self, with_brush: bool = True) -> np.ndarray:
        """The canvas image ``h×w×3`` uint8: overlay, strokes, brush preview / local rectangle."""
        out = self._viz()
        if self.local is not None or self.frame.t == self.cursor:
            # strokes belong to the frame they were drawn on (browsing during a propagation moves away)
            out = self.target.canvas.composite(out)
        if not with_brush:
            return out
        out = out.copy()
        h, w = out.shape[:2]
        ex, ey = self.hover
        if self.pressed and self.ctrl_drag:
            lx, ux, ly, uy = bbox_from_points(self.local_start, (ex, ey))
            box, colour, shape = (lx, ux, ly, uy), (128, 255, 128), "rect"
        else:
            r = self.brush_size // 2 + 1
            cx, cy = int(round(ex)), int(round(ey))
            box, colour, shape = (cx - r, cx + r, cy - r, cy + r), None, "dot"
        # blend only the preview's bounding box (this runs on every mouse move)
        x0, x1 = max(box[0], 0), min(box[1], w - 1)
        y0, y1 = max(box[2], 0), min(box[3], h - 1)
        if x1 < x0 or y1 < y0:
            return out
        layer = stroke_canvas(y1 - y0 + 1, x1 - x0 + 1)
        if shape == "rect":
            cv2.rectangle(layer.colour, (box[0] - x0, box[2] - y0), (box[1] - x0, box[3] - y0), colour, thickness=-1)
            cv2.rectangle(layer.alpha, (box[0] - x0, box[2] - y0), (box[1] - x0, box[3] - y0), 0.5, thickness=-1)
        else:
            layer.dot((ex - x0, ey - y0), self.current_object, radius=self.brush_size // 2 + 1, alpha=0.5)
        out[y0:y1 + 1, x0:x1 + 1] = layer.composite(out[y0:y1 + 1, x0:x1 + 1])
        return out

    def minimap(self, rendered: np.ndarray | None = None) -> np.ndarray:
        """Square patch of ``zoom_pixels`` around the pointer (frozen full frame in local control).
        ``rendered``: the current :meth:`render` output, if the caller has it already."""
        if self.in_local_mode and self.minimap_in_local is not None:
            return self.minimap_in_local
        full = self.render() if rendered is None else rendered
        r = self.zoom_pixels // 2
        ex, ey = self.hover
        ex = int(round(max(r, min(self.width - r, ex))))
        ey = int(round(max(r, min(self.height - r, ey))))
        return np.ascontiguousarray(full[max(ey - r, 0):ey + r, max(ex - r, 0):ex + r])

    def colours(self) -> np.ndarray:
        """``(K+1)×3`` uint8 object colours (for the view's object buttons)."""
        return object_colours(self.num_objects)

    # ------------------------------------------------------------------ pointer input
    def move(self, x: float, y: float) -> None:
        """Pointer moved to image coordinates (x, y) (the crop's in local control)."""
        self.hover = (x, y)
        if self.pressed and not self.ctrl_drag and self.mode in ("Scribble", "Free"):
            label = 0 if self.right_click else self.current_object
            self.target.interaction.push_point(x, y, label, self.target.canvas)

    def press(self, x: float, y: float, positive: bool = True, ctrl: bool = False) -> None:
        """Mouse press: ``positive`` = left button; ``ctrl`` = Ctrl held (starts a local region)."""
        if self._refuse_if_busy():
            return
        self._start_timers()
        self.user_timer.pause()
        target = self.target
        self.ctrl_drag = bool(ctrl and positive and not self.in_local_mode)
        self.pressed = True
        self.right_click = not positive
        target.snapshot_canvas()
        if self.ctrl_drag:
            target.complete()
            self.local_start = (x, y)
        elif self.mode == "Click" and self.fbrs is None:
            self.log("Click mode needs the f-BRS model (--fbrs_model); use Scribble or Free.")
            self.pressed = False
        else:
            self._maybe_new_interaction(target)
        self.move(x, y)
        self.user_timer.start()

    def _maybe_new_interaction(self, target: EditTarget) -> None:
        last = target.interaction
        h, w = target.height, target.width
        new = None
        if self.mode == "Scribble":
            if not isinstance(last, ScribbleInteraction):
                target.complete()
                new = ScribbleInteraction(target.image, target.prev_hard(), (h, w), self.s2m, self.num_objects)
        elif self.mode == "Free":
            if not isinstance(last, FreeInteraction):
                target.complete()
                new = FreeInteraction(target.image, target.prev_soft(), (h, w), self.num_objects, target.pad,
                                      self.free_brush_size)
        elif not isinstance(last, ClickInteraction) or last.tar_obj != self.current_object:
            target.complete()
            self.fbrs.unanchor()
            # the target's own pad (the crop's in local control; the original used the frame's: a bug)
            new = ClickInteraction(target.image, target.prev_soft(), (h, w), self.fbrs, self.current_object,
                                   target.pad)
        if new is not None:
            target.interaction = new

    def release(self, x: float, y: float) -> Job | None:
        """Mouse release. Ends a Ctrl-drag (enters local control, no job) or an interaction: the
        stroke / click is recorded here, the network (f-BRS, S2M, free-paint aggregation) runs in the
        returned job."""
        if not self.pressed:
            return None
        self.user_timer.pause()
        try:
            if self.ctrl_drag:
                self.frame.canvas.clear()
                self.ctrl_drag = False
                self.enter_local_control(bbox_from_points(self.local_start, (x, y)))
                return None
            return self._interaction_job(x, y)
        finally:
            self.pressed = self.ctrl_drag = self.right_click = False
            self.user_timer.start()

    def _interaction_job(self, x: float, y: float) -> Job:
        target, mode, negative = self.target, self.mode, self.right_click
        interaction = target.interaction
        self.log("Interaction %s at frame %d." % (mode, self.cursor))
        if mode in ("Scribble", "Free"):
            self.move(x, y)
            interaction.end_path()
            if mode == "Free":
                target.canvas.clear()
        else:
            # the dot shows at once; f-BRS runs in the job
            target.canvas.dot((x, y), 0 if negative else interaction.tar_obj)

        def steps():
            with self._net_context():
                if mode == "Click":
                    interaction.push_point(x, y, negative)
                target.set_mask(interaction.predict())
            self._show_edit()
            yield 1, 1

        return Job(self, mode, steps)

    def _show_edit(self) -> None:
        """Display the target's mask; a frame edit is autosaved at once (a crash must not lose it)."""
        self.target.show()
        self._viz_cache = None
        if self.local is None:
            self.autosave(frames=[self.frame.mask_frame])

    # ------------------------------------------------------------------ interaction bookkeeping
    def commit(self) -> None:
        """Scribble mode: close the current scribble interaction; the next stroke starts a new one
        from the current result."""
        if self._refuse_if_busy():
            return
        target = self.target
        target.complete()
        if target.mask is not None and (self.local is not None or target.mask_frame == self.cursor):
            target.show()
            self._viz_cache = None

    def undo(self) -> Job | None:
        """One step back (may rerun S2M or f-BRS: a job)."""
        if self._refuse_if_busy():
            return None
        target = self.target

        def steps():
            with self._net_context():
                target.undo()
            if target is self.frame:
                self.frame.set_mask(self.frame.mask)
            self.log("Undo.")
            self._show_edit()
            yield 1, 1

        return Job(self, "undo", steps)

    def reset_frame(self) -> None:
        """Zero the displayed mask of this frame; the core's probabilities are kept on purpose
        (the next propagation needs them for the difference masks)."""
        if self.in_local_mode or self._refuse_if_busy():
            return
        self.core.clear_mask(self.cursor)
        self.frame.reset()
        if self.fbrs is not None:
            self.fbrs.unanchor()
        self._viz_cache = None
        self.log(f"Reset frame {self.cursor}.")
        self.autosave(frames=[self.cursor])

    # ------------------------------------------------------------------ local control
    def enter_local_control(self, bbox) -> None:
        lx, ux, ly, uy = bbox
        lx, ux = max(0, lx), min(self.width - 1, ux)
        ly, uy = max(0, ly), min(self.height - 1, uy)
        if ux <= lx or uy <= ly:
            self.log("Local region too small; drag a larger rectangle with Ctrl held.")
            return
        self.minimap_in_local = self.render(with_brush=False)
        # always the last propagated probabilities, as the original
        crop = np.ascontiguousarray(np.asarray(self.frames[self.cursor])[ly:uy + 1, lx:ux + 1])
        self.local = LocalTarget(self.core.get_image(self.cursor), self.core.get_prob(self.cursor)[1:],
                                 self.core.pad, (lx, ux, ly, uy), crop)
        self.hover = ((ux - lx) / 2, (uy - ly) / 2)
        self._viz_cache = None
        self.log("Entered local control.")

    def finish_local(self) -> None:
        """Paste the crop's result back into the frame (a cheap tensor paste, no network)."""
        local = self.local
        if local is None or self._refuse_if_busy():
            return
        local.complete()
        self.local = None
        frame = self.frame
        frame.interaction = LocalInteraction(frame.image, frame.prev_soft(), (self.height, self.width), local.bbox,
                                             local.history[-1].out_prob, frame.pad, local.pad)
        frame.set_mask(frame.interaction.predict())
        frame.complete()
        self.minimap_in_local = None
        lx, ux, ly, uy = local.bbox
        self.hover = ((lx + ux) / 2, (ly + uy) / 2)
        self._show_edit()
        self.log("Finished local control.")

    # ------------------------------------------------------------------ propagation
    def propagate(self) -> Job | None:
        """Propagate the frame's edit through the clip, or ``None`` (with a console line) when there is
        nothing to propagate from the shown frame. The job yields ``(frames_done, frames_total)``
        after each frame; closing it cancels (the frames done so far are kept and autosaved)."""
        if self.in_local_mode:
            self.log("Finish local control before propagating.")
            return None
        if self._refuse_if_busy():
            return None
        frame = self.frame
        if frame.mask is None:
            self.log("Cannot propagate! No interacted mask!")
            return None
        if frame.mask_frame != self.cursor:
            # the original would propagate frame N's edit as if drawn here: refuse instead
            self.log(f"Cannot propagate from frame {self.cursor}: the last edit is on frame {frame.mask_frame}; "
                     "go back there (or edit this frame) and propagate.")
            return None
        return Job(self, "propagate", lambda: self._propagation_steps(frame.mask, frame.mask_frame))

    def _propagation_steps(self, mask: torch.Tensor, t0: int) -> Iterator[tuple[int, int]]:
        """Runs on the worker thread: touches the core, never the view."""
        self.user_timer.pause()
        self.log("Propagation started.")
        backward, forward = self.core.pass_bounds(t0)
        # the order in which the core propagates: forward to its stop, then backward
        order = list(range(t0 + 1, forward)) + list(range(t0 - 1, backward, -1))
        start, done, total, finished = time.perf_counter(), 0, 0, False
        steps = self.core.interact_iter(mask, t0)
        try:
            for done, total in steps:
                if 0 < done <= len(order):
                    # the core refreshes its masks when the pass ends: show each frame's newest result now
                    t = order[done - 1]
                    hard = hard_labels(self.core.get_prob(t))
                    self._live[t] = unpad(hard, self.core.pad)[0].to("cpu", torch.uint8).numpy()
                self.progress = (done, total)
                yield done, total
            finished = True
        finally:
            steps.close()
            self._live.clear()
            elapsed = time.perf_counter() - start
            self.last_propagation_s = elapsed
            self.last_speed_fps = done / elapsed if done and elapsed > 0 else None
            self.frame.move_to(self.cursor)
            if self.fbrs is not None:
                self.fbrs.unanchor()
            self._viz_cache = None
            if finished:
                self.frame.clear_pending()
                self.log("Propagation finished!")
            else:
                self.log(f"Propagation cancelled after {done} of {total} frames.")
            self.autosave()
            self.user_timer.start()

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | os.PathLike, video: bool = True) -> Job | None:
        """Write ``mask/%05d.png`` (palette, object ids) and ``overlay/%05d.png`` (the chosen overlay
        mode) at the video's ORIGINAL resolution (masks nearest-resized up), plus ``overlay.mp4`` (an odd
        width / height gets its last column / row repeated: the encoder needs even sizes). Closing the
        job early cancels (no partial video is left behind)."""
        if self.in_local_mode:
            self.log("Finish local control before exporting.")
            return None
        if self._refuse_if_busy():
            return None
        return Job(self, "export", lambda: self._export_steps(Path(out_dir), video, self.overlay_mode))

    def _export_steps(self, out: Path, video: bool, mode: str) -> Iterator[tuple[int, int]]:
        ok = False
        self.log(f"Saving masks and {mode} overlays to {out} ...")
        try:
            for done, total in export_steps(self.frames, self.core.np_masks, out, mode, self.num_objects, video,
                                            self.log):
                self.progress = (done, total)
                yield done, total
            ok = True
            if self.workspace is None or not self.workspace.writable:
                self.unsaved_edits = False    # the masks are on disk now
        finally:
            self.log("Done." if ok else "Export cancelled.")
