"""The Qt-free brain of the annotation GUI.

:class:`AnnotationController` owns the :class:`~inference_core.InferenceCore`, the interaction
controllers (S2M, f-BRS), the current interactions, local mode, the timers, the console and the
workspace. The view (``gui/main_window.py``) only forwards user input in image coordinates and
shows what :meth:`AnnotationController.render` / :meth:`minimap` return: **no tensor ever
crosses to the view** — it gets uint8 RGB numpy images, strings and plain numbers.

State machine and semantics follow the original GUI (spec §4–5): clicks (f-BRS, per object),
scribbles (S2M, several objects per interaction, Commit), free painting, Undo / Reset Frame,
local control (Ctrl-drag a region, Finish Local), Propagate. Beyond the original: propagation is
an iterator (the view runs it on a worker thread and can cancel it), every propagation autosaves
the masks, objects can be added mid-session, export at the video's original resolution.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from gui.overlay import OVERLAY_MODES, overlay
from gui.workspace import SessionState, Workspace, WorkspaceError
from inference_core.interaction.interactions import (ClickInteraction, CropperInteraction, FreeInteraction,
                                                     Interaction, LocalInteraction, ScribbleInteraction,
                                                     StrokeCanvas, bbox_from_points)
from util.fileio import atomic_path
from util.palette import object_colours, save_mask_png
from util.tensor_util import Pad, pad_divide_by, unpad

MODES = ("Click", "Scribble", "Free")
DEFAULT_BRUSH = 3
ZOOM_DEFAULT, ZOOM_STEP, ZOOM_MIN, ZOOM_MAX = 150, 25, 50, 300
STROKE_HISTORY = 100


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
    """Resident memory of this process in MiB (psutil if installed, else /proc)."""
    try:
        import psutil
        return psutil.Process(os.getpid()).memory_info().rss / 2 ** 20
    except ImportError:
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


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
    ``s2m_factory(num_objects)`` builds the scribble controller (rebuilt when an object is added);
    ``fbrs``: the click controller or ``None`` (click mode then tells the user it is unavailable);
    ``log``: called with every console line (also printed to stdout by the view).
    """

    def __init__(self, core, frames, s2m_factory: Callable[[int], object], fbrs=None,
                 workspace: Workspace | None = None, log: Callable[[str], None] | None = None,
                 amp: bool = False):
        self.core = core
        self.amp = amp
        self.frames = frames
        self.s2m_factory = s2m_factory
        self.num_objects = int(core.num_objects)
        self.s2m = s2m_factory(self.num_objects)
        self.fbrs = fbrs
        self.workspace = workspace
        self._log_cb = log
        self.console: list[str] = []

        self.num_frames = len(frames)
        self.height, self.width = int(frames.size[1]), int(frames.size[0])
        self.cursor = 0
        self.current_object = 1
        self.mode = "Click"
        self.free_brush_size = DEFAULT_BRUSH
        self.overlay_mode = "davis"
        self.zoom_pixels = ZOOM_DEFAULT
        self.busy = False                   # a propagation is running (worker thread)
        self.last_speed_fps: float | None = None
        self.last_propagation_s: float | None = None

        self.algo_timer, self.user_timer = Timer(), Timer()
        self.waiting_to_start = True

        # global interaction state
        self.interaction: Interaction | None = None
        self.this_frame_interactions: list[Interaction] = []
        self.interacted_mask: torch.Tensor | None = None   # (K+1)×1×H'×W'
        self.pending_frame: int | None = None
        self.vis = StrokeCanvas(self.height, self.width, self.num_objects)
        self.vis_hist: deque = deque(maxlen=STROKE_HISTORY)

        # local mode state
        self.in_local_mode = False
        self.local_bb = None
        self.local_interactions: list[Interaction] = []
        self.local_interaction: Interaction | None = None
        self.local_interacted_mask: torch.Tensor | None = None
        self.local_pad: Pad | None = None
        self.local_torch_im: torch.Tensor | None = None
        self.local_np_im: np.ndarray | None = None
        self.local_np_mask: np.ndarray | None = None
        self.local_vis: StrokeCanvas | None = None
        self.local_vis_hist: deque = deque(maxlen=STROKE_HISTORY)
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
        self.log("Initialized.")

    def _net_context(self) -> contextlib.ExitStack:
        """No autograd, and fp16 autocast on CUDA unless --no_amp (as the original). Thread-local:
        entered on whichever thread runs the networks."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        if self.amp:
            stack.enter_context(torch.autocast(device_type="cuda"))
        return stack

    # ------------------------------------------------------------------ console / status
    def log(self, text: str) -> None:
        line = "[A: %03.2f, U: %03.2f]: %s" % (self.algo_timer.seconds(), self.user_timer.seconds(), text)
        self.console.append(line)
        if self._log_cb is not None:
            self._log_cb(line)

    def _start_timers(self) -> None:
        if self.waiting_to_start:
            self.waiting_to_start = False
            self.algo_timer.start()
            self.user_timer.start()
            self.log("Timers started.")

    def status_text(self) -> str:
        speed = "–" if self.last_speed_fps is None else f"{self.last_speed_fps:.1f} frames/s"
        mem = memory_in_use_mb()
        local = " | LOCAL" if self.in_local_mode else ""
        device = getattr(self.core, "device", None)
        gpu = ""
        if device is not None and getattr(device, "type", "") == "cuda":
            gpu = f" (GPU {torch.cuda.memory_allocated(device) / 2 ** 20:.0f} MiB)"
        return (f"Frame {self.cursor} / {self.num_frames - 1} | Object {self.current_object} / {self.num_objects}"
                f" | {self.mode} | last propagation: {speed} | memory: {mem:.0f} MiB{gpu}{local}")

    def lcd_text(self) -> str:
        return "{: 3d} / {: 3d}".format(self.cursor, self.num_frames - 1)

    @property
    def brush_size(self) -> int:
        # clicks and scribbles have a fixed 3-px brush; the slider only drives free painting
        return self.free_brush_size if self.mode == "Free" else DEFAULT_BRUSH

    def enabled(self) -> dict[str, bool]:
        """Which controls the view should enable."""
        nav = not self.in_local_mode and not self.busy
        return {"navigate": nav, "propagate": nav, "zoom": nav, "play": nav,
                "finish_local": self.in_local_mode and not self.busy,
                "commit": self.mode == "Scribble" and not self.busy,
                "brush": self.mode == "Free",
                "undo": not self.busy, "reset": nav, "draw": not self.busy,
                "add_object": nav, "export": nav, "cancel": self.busy}

    # ------------------------------------------------------------------ workspace
    def _open_workspace(self) -> None:
        ws = self.workspace
        try:
            state = ws.open(self.frames.identity(), (self.width, self.height))
        except WorkspaceError as e:
            self.workspace_error = str(e)
            self.log(f"Workspace not used: {e}")
            return
        self.workspace_error = None
        if state is None:
            ws.save_session(self.num_objects, 0, [], None)
            self.log(f"New workspace {ws.root}; masks are autosaved there after every propagation.")
            return
        self._resume(state)

    def _resume(self, state: SessionState) -> None:
        while self.num_objects < state.num_objects:
            self.core.add_object()
            self.num_objects += 1
        if self.num_objects != self.s2m_num_objects():
            self.s2m = self.s2m_factory(self.num_objects)
        self.vis.num_objects = self.num_objects
        for t, mask in state.masks.items():
            if mask.max() > 0:
                self._restore_frame(t, mask)
        self.core.mark_interacted(t for t in state.interacted if 0 <= t < self.num_frames)
        self.cursor = min(max(state.cursor, 0), self.num_frames - 1)
        if state.pending_frame is not None and state.pending_frame in state.masks:
            # an interaction that was not propagated before the session ended: propagate-able again
            self.cursor = int(state.pending_frame)
            self.interacted_mask = self._onehot(state.masks[self.cursor])
            self.pending_frame = self.cursor
        self.resumed = True
        self._viz_cache = None
        self.log(f"Resumed workspace {self.workspace.root}: {len(state.masks)} masks, {self.num_objects} objects.")

    def s2m_num_objects(self) -> int:
        return int(getattr(self.s2m, "num_objects", self.num_objects))

    def _onehot(self, mask: np.ndarray) -> torch.Tensor:
        """``H×W`` labels → padded one-hot probabilities ``(K+1)×1×H'×W'`` (pad area = background)."""
        m = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        oh = torch.nn.functional.one_hot(m.clamp(max=self.num_objects), self.num_objects + 1)
        oh = oh.permute(2, 0, 1).unsqueeze(1).float()
        oh, _ = pad_divide_by(oh, 16)
        oh[0] = torch.where(oh[1:].sum(0) == 0, torch.ones_like(oh[0]), oh[0])
        return oh.to(self._device())

    def _device(self) -> torch.device:
        return self.core.get_image(self.cursor).device

    def _restore_frame(self, t: int, mask: np.ndarray) -> None:
        """Put a saved mask back into the core: hard probabilities + displayed mask."""
        # the soft probabilities are not saved (too large for long videos): the hard mask stands in
        self.core.restore_frame(t, self._onehot(mask))

    def autosave(self, frames=None) -> None:
        ws = self.workspace
        if ws is None or not ws.writable:
            return
        try:
            n = ws.save_masks(self.core.np_masks, frames)
            ws.save_session(self.num_objects, self.cursor, self.core.interacted_frames, self.pending_frame)
        except OSError as e:
            self.log(f"Autosave failed ({type(e).__name__}: {e}); check that {ws.root} is writable.")
            return
        if frames is None:
            self.log(f"Autosaved {n} changed masks to {ws.mask_dir}.")

    # ------------------------------------------------------------------ frame / object / mode
    def set_frame(self, t: int) -> None:
        t = int(min(max(t, 0), self.num_frames - 1))
        if self.in_local_mode:
            return
        self._start_timers()
        self.reset_this_interaction()
        self.cursor = t
        self._viz_cache = None

    def next_frame(self) -> None:
        self.set_frame(self.cursor + 1)

    def prev_frame(self) -> None:
        self.set_frame(self.cursor - 1)

    def play_tick(self) -> None:
        self.set_frame(0 if self.cursor >= self.num_frames - 1 else self.cursor + 1)

    def set_object(self, k: int) -> None:
        if not 1 <= k <= self.num_objects or k == self.current_object:
            return
        self.current_object = int(k)
        if self.fbrs is not None:
            self.fbrs.unanchor()
        self.log("Current object changed to %d!" % k)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown interaction mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode

    def set_brush_size(self, size: int) -> None:
        self.free_brush_size = int(min(max(size, 1), 100))
        if isinstance(self._active(), FreeInteraction):
            self._active().set_size(self.free_brush_size)

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

    def add_object(self) -> int:
        """Add an object mid-session (not in local mode, not while propagating). Returns its id."""
        if self.in_local_mode or self.busy:
            self.log("Finish local control / propagation before adding an object.")
            return self.num_objects
        self.reset_this_interaction()
        self.core.add_object()
        self.num_objects += 1
        self.s2m = self.s2m_factory(self.num_objects)
        self.vis.num_objects = self.num_objects
        if self.interacted_mask is not None:
            zero = torch.zeros_like(self.interacted_mask[:1])
            self.interacted_mask = torch.cat([self.interacted_mask, zero], 0)
        self.current_object = self.num_objects
        if self.fbrs is not None:
            self.fbrs.unanchor()
        self.log(f"Added object {self.num_objects}; it is now the current object.")
        self.autosave(frames=[])
        return self.num_objects

    # ------------------------------------------------------------------ display
    @property
    def view_size(self) -> tuple[int, int]:
        """(w, h) of the image the canvas shows now (the crop in local mode)."""
        if self.in_local_mode:
            return self.local_np_im.shape[1], self.local_np_im.shape[0]
        return self.width, self.height

    def current_mask(self) -> np.ndarray:
        """``H×W`` uint8 labels of the current frame (working resolution)."""
        return np.asarray(self.core.np_masks[self.cursor])

    def _viz(self) -> np.ndarray:
        # read the cache once: the worker thread may reset it while the GUI thread draws
        cache = self._viz_cache
        if self.in_local_mode:
            key = ("local", self.overlay_mode, hash(self.local_np_mask.tobytes()))
            if cache is None or cache[0] != key:
                cache = (key, overlay(self.local_np_im, self.local_np_mask, self.overlay_mode, self.num_objects))
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
        out = (self.local_vis if self.in_local_mode else self.vis).composite(self._viz())
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
        layer = StrokeCanvas(y1 - y0 + 1, x1 - x0 + 1, self.num_objects)
        if shape == "rect":
            cv2.rectangle(layer.colour, (box[0] - x0, box[2] - y0), (box[1] - x0, box[3] - y0), colour, thickness=-1)
            cv2.rectangle(layer.alpha, (box[0] - x0, box[2] - y0), (box[1] - x0, box[3] - y0), 0.5, thickness=-1)
        else:
            layer.dot((ex - x0, ey - y0), self.current_object, radius=self.brush_size // 2 + 1, alpha=0.5)
        out[y0:y1 + 1, x0:x1 + 1] = layer.composite(out[y0:y1 + 1, x0:x1 + 1])
        return out

    def minimap(self, rendered: np.ndarray | None = None) -> np.ndarray:
        """Square patch of ``zoom_pixels`` around the pointer (frozen full frame in local mode).
        ``rendered``: the current :meth:`render` output, if the caller has it already."""
        if self.in_local_mode and self.minimap_in_local is not None:
            return self.minimap_in_local
        full = self.render() if rendered is None else rendered
        r = self.zoom_pixels // 2
        ex, ey = self.hover
        ex = int(round(max(r, min(self.width - r, ex))))
        ey = int(round(max(r, min(self.height - r, ey))))
        return np.ascontiguousarray(full[max(ey - r, 0):ey + r, max(ex - r, 0):ex + r])

    # ------------------------------------------------------------------ pointer input
    def _active(self) -> Interaction | None:
        return self.local_interaction if self.in_local_mode else self.interaction

    def move(self, x: float, y: float) -> None:
        """Pointer moved to image coordinates (x, y) (the crop's in local mode)."""
        self.hover = (x, y)
        if self.pressed and not self.ctrl_drag and self.mode in ("Scribble", "Free"):
            label = 0 if self.right_click else self.current_object
            vis = self.local_vis if self.in_local_mode else self.vis
            self._active().push_point(x, y, label, vis)

    def press(self, x: float, y: float, positive: bool = True, ctrl: bool = False) -> None:
        """Mouse press: ``positive`` = left button; ``ctrl`` = Ctrl held (starts a local region)."""
        if self.busy:
            return
        self._start_timers()
        self.user_timer.pause()
        self.ctrl_drag = bool(ctrl and positive and not self.in_local_mode)
        self.pressed = True
        self.right_click = not positive
        if self.in_local_mode:
            self.local_vis_hist.append(self.local_vis.snapshot())
        else:
            self.vis_hist.append(self.vis.snapshot())
        if self.ctrl_drag:
            self.complete_interaction()
            self.local_start = (x, y)
        elif self.mode == "Click" and self.fbrs is None:
            self.log("Click mode needs the f-BRS model (--fbrs_model); use Scribble or Free.")
            self.pressed = False
        else:
            self._maybe_new_interaction()
        self.move(x, y)
        self.user_timer.start()

    def _maybe_new_interaction(self) -> None:
        if self.in_local_mode:
            last = self.local_interaction
            prev_soft = (self.local_interactions[-1].out_prob if last is None else last.out_prob)
            prev_hard = torch.argmax(self.local_interacted_mask, 0).to(torch.uint8)
            image, pad = self.local_torch_im, self.local_pad
            h, w = self.local_np_im.shape[:2]
        else:
            last = self.interaction
            if last is not None:
                prev_soft = last.out_prob
            elif self.this_frame_interactions:
                prev_soft = self.this_frame_interactions[-1].out_prob
            else:
                prev_soft = self.core.get_prob(self.cursor)[1:]
            prev_hard = self.core.get_mask(self.cursor)
            image, pad = self.core.get_image(self.cursor), self.core.pad
            h, w = self.height, self.width
        new = None
        if self.mode == "Scribble":
            if not isinstance(last, ScribbleInteraction):
                self.complete_interaction()
                new = ScribbleInteraction(image, prev_hard, (h, w), self.s2m, self.num_objects)
        elif self.mode == "Free":
            if not isinstance(last, FreeInteraction):
                self.complete_interaction()
                new = FreeInteraction(image, prev_soft, (h, w), self.num_objects, pad, self.free_brush_size)
        else:
            if not isinstance(last, ClickInteraction) or last.tar_obj != self.current_object:
                self.complete_interaction()
                self.fbrs.unanchor()
                # the crop's own pad in local mode (the original used the frame's pad there: a bug)
                new = ClickInteraction(image, prev_soft, (h, w), self.fbrs, self.current_object, pad)
        if new is not None:
            if self.in_local_mode:
                self.local_interaction = new
            else:
                self.interaction = new

    def release(self, x: float, y: float) -> None:
        if not self.pressed:
            return
        self.user_timer.pause()
        try:
            with self._net_context():
                self._release(x, y)
        finally:
            self.pressed = self.ctrl_drag = self.right_click = False
            self.user_timer.start()

    def _release(self, x: float, y: float) -> None:
        if self.ctrl_drag:
            self.vis.clear()
            self.ctrl_drag = False
            self.enter_local_control(bbox_from_points(self.local_start, (x, y)))
        else:
            self.log("Interaction %s at frame %d." % (self.mode, self.cursor))
            interaction = self._active()
            if self.mode in ("Scribble", "Free"):
                self.move(x, y)
                interaction.end_path()
                if self.mode == "Free":
                    (self.local_vis if self.in_local_mode else self.vis).clear()
            else:
                vis = self.local_vis if self.in_local_mode else self.vis
                interaction.push_point(x, y, self.right_click, vis)
            mask = interaction.predict()
            if self.in_local_mode:
                self.local_interacted_mask = mask
            else:
                self.interacted_mask = mask
                self.pending_frame = self.cursor
            self.update_interacted_mask()
            if not self.in_local_mode:
                # a crash now must not lose this frame's edit
                self.autosave(frames=[self.cursor])

    # ------------------------------------------------------------------ interaction bookkeeping
    def update_interacted_mask(self) -> None:
        if self.in_local_mode:
            hard = torch.argmax(self.local_interacted_mask, 0)
            self.local_np_mask = unpad(hard, self.local_pad)[0].to(torch.uint8).cpu().numpy()
        else:
            self.core.update_mask_only(self.interacted_mask, self.cursor)
        self._viz_cache = None

    def complete_interaction(self) -> None:
        if self.in_local_mode:
            if self.local_interaction is not None:
                self.local_vis.clear()
                self.local_interactions.append(self.local_interaction)
                self.local_interaction = None
        elif self.interaction is not None:
            self.vis.clear()
            self.this_frame_interactions.append(self.interaction)
            self.interaction = None

    def _clear_visualization(self) -> None:
        if self.in_local_mode:
            self.local_vis.clear()
            self.local_vis_hist.clear()
        else:
            self.vis.clear()
            self.vis_hist.clear()

    def reset_this_interaction(self) -> None:
        self.complete_interaction()
        self._clear_visualization()
        if self.in_local_mode:
            self.local_interaction = None
            self.local_interactions = self.local_interactions[:1]
        else:
            self.interaction = None
            self.this_frame_interactions = []
        if self.fbrs is not None:
            self.fbrs.unanchor()

    def commit(self) -> None:
        """Scribble mode: close the current scribble interaction; the next stroke starts a new one
        from the current result."""
        self.complete_interaction()
        if self._current_interacted_mask() is not None:
            self.update_interacted_mask()

    def _current_interacted_mask(self):
        return self.local_interacted_mask if self.in_local_mode else self.interacted_mask

    def undo(self) -> None:
        if self.busy:
            return
        with self._net_context():
            self._undo()

    def _undo(self) -> None:
        if self.in_local_mode:
            li = self.local_interaction
            if li is not None and li.can_undo():
                self.local_interacted_mask = li.undo()
            else:
                if li is None and len(self.local_interactions) > 1:
                    self.local_interactions = self.local_interactions[:-1]
                elif li is not None and len(self.local_interactions) > 1:
                    self.local_interaction = None
                else:
                    self.reset_this_interaction()
                self.local_interacted_mask = self.local_interactions[-1].predict()
            if self.local_vis_hist:
                self.local_vis.restore(self.local_vis_hist.pop())
        else:
            gi = self.interaction
            if gi is not None and gi.can_undo():
                self.interacted_mask = gi.undo()
            elif gi is None and len(self.this_frame_interactions) > 1:
                self.this_frame_interactions = self.this_frame_interactions[:-1]
                self.interacted_mask = self.this_frame_interactions[-1].predict()
            elif gi is not None and self.this_frame_interactions:
                self.interaction = None
                self.interacted_mask = self.this_frame_interactions[-1].predict()
            else:
                self.reset_this_interaction()
                self.interacted_mask = self.core.get_prob(self.cursor).clone()
            self.pending_frame = self.cursor
            if self.vis_hist:
                self.vis.restore(self.vis_hist.pop())
        self.log("Undo.")
        self.update_interacted_mask()
        if not self.in_local_mode:
            self.autosave(frames=[self.cursor])

    def reset_frame(self) -> None:
        """Zero the displayed mask of this frame; the core's probabilities are kept on purpose
        (the next propagation needs them for the difference masks)."""
        if self.in_local_mode or self.busy:
            return
        self.core.clear_mask(self.cursor)
        self.reset_this_interaction()
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
        self.in_local_mode = True
        self.local_bb = (lx, ux, ly, uy)
        # always the last propagated probabilities, as the original
        cropper = CropperInteraction(self.core.get_image(self.cursor), self.core.get_prob(self.cursor)[1:],
                                     self.core.pad, self.local_bb)
        self.local_interactions = [cropper]
        self.local_interaction = None
        self.local_interacted_mask = cropper.out_mask
        self.local_torch_im = cropper.im_crop
        self.local_pad = cropper.pad
        self.local_np_im = np.ascontiguousarray(np.asarray(self.frames[self.cursor])[ly:uy + 1, lx:ux + 1])
        self.local_vis = StrokeCanvas(uy - ly + 1, ux - lx + 1, self.num_objects)
        self.local_vis_hist = deque(maxlen=STROKE_HISTORY)
        self.hover = ((ux - lx) / 2, (uy - ly) / 2)
        self.update_interacted_mask()
        self.log("Entered local control.")

    def finish_local(self) -> None:
        if not self.in_local_mode:
            return
        self.complete_interaction()
        self.in_local_mode = False
        if self.this_frame_interactions:
            prev_soft = self.this_frame_interactions[-1].out_prob
        else:
            prev_soft = self.core.get_prob(self.cursor)[1:]
        self.interaction = LocalInteraction(self.core.get_image(self.cursor), prev_soft,
                                            (self.height, self.width), self.local_bb,
                                            self.local_interactions[-1].out_prob, self.core.pad, self.local_pad)
        self.interacted_mask = self.interaction.predict()
        self.pending_frame = self.cursor
        self.complete_interaction()
        self.update_interacted_mask()
        self.local_vis = None
        self.minimap_in_local = None
        lx, ux, ly, uy = self.local_bb
        self.hover = ((lx + ux) / 2, (ly + uy) / 2)
        self.log("Finished local control.")
        self.autosave(frames=[self.cursor])

    # ------------------------------------------------------------------ propagation
    def propagate_iter(self) -> Iterator[tuple[int, int]]:
        """Propagate the current frame's interaction through the clip.

        Yields ``(frames_done, frames_total)`` after each frame; closing the iterator early
        cancels (the core stays consistent, the frames done so far are kept and autosaved).
        Runs on a worker thread in the GUI: it touches no view state.
        """
        if self.in_local_mode:
            self.log("Finish local control before propagating.")
            return
        if self.interacted_mask is None:
            self.log("Cannot propagate! No interacted mask!")
            return
        if self.pending_frame is not None and self.pending_frame != self.cursor:
            # the original would propagate frame N's edit as if drawn here: refuse instead
            self.log(f"Cannot propagate from frame {self.cursor}: the last edit is on frame {self.pending_frame}; "
                     "go back there (or edit this frame) and propagate.")
            return
        self.user_timer.pause()
        self.busy = True
        self.log("Propagation started.")
        start, done, total, finished = time.perf_counter(), 0, 0, False
        steps = self.core.interact_iter(self.interacted_mask, self.cursor)
        try:
            # the core enters its own no-grad / autocast per step (thread-local state never spans a yield)
            for done, total in steps:
                yield done, total
            finished = True
        finally:
            steps.close()
            elapsed = time.perf_counter() - start
            self.last_propagation_s = elapsed
            self.last_speed_fps = done / elapsed if done and elapsed > 0 else None
            self.busy = False
            self.reset_this_interaction()
            self._viz_cache = None
            if finished:
                self.interacted_mask = None
                self.pending_frame = None
                self.log("Propagation finished!")
            else:
                self.log(f"Propagation cancelled after {done} of {total} frames.")
            self.autosave()
            self.user_timer.start()

    def propagate(self) -> None:
        """Run a whole propagation on this thread (scripts and tests)."""
        for _ in self.propagate_iter():
            pass

    # ------------------------------------------------------------------ export
    def export_iter(self, out_dir: str | os.PathLike, video: bool = True) -> Iterator[tuple[int, int]]:
        """Write ``mask/%05d.png`` (palette, object ids) and ``overlay/%05d.png`` (davis overlay) at the
        video's ORIGINAL resolution (masks nearest-resized up), plus ``overlay.mp4``. Yields progress;
        closing the iterator early cancels (no partial video is left behind)."""
        out = Path(out_dir)
        self.log(f"Saving masks and overlays to {out} ...")
        ok = False
        try:
            with contextlib.ExitStack() as stack:
                writer = None
                ow, oh = self.frames.original_size
                if video:
                    tmp_video = stack.enter_context(atomic_path(out / "overlay.mp4"))   # ends in .mp4
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"),
                                             float(getattr(self.frames, "fps", 25.0)), (ow, oh))
                    if not writer.isOpened():
                        self.log("OpenCV cannot write mp4 here; the overlay video is skipped.")
                        writer = None
                    else:
                        stack.callback(writer.release)   # runs before the atomic rename
                for t in range(self.num_frames):
                    mask = np.asarray(self.core.np_masks[t])
                    if mask.shape != (oh, ow):
                        mask = cv2.resize(mask, (ow, oh), interpolation=cv2.INTER_NEAREST)
                    save_mask_png(out / "mask" / f"{t:05d}.png", mask)
                    vis = cv2.cvtColor(overlay(self.frames.read_original(t), mask, "davis", self.num_objects),
                                       cv2.COLOR_RGB2BGR)
                    with atomic_path(out / "overlay" / f"{t:05d}.png") as tmp:   # ends in .png
                        if not cv2.imwrite(str(tmp), vis):
                            raise OSError(f"cannot write {tmp}")
                    if writer is not None:
                        writer.write(vis)
                    yield t + 1, self.num_frames
            ok = True
        finally:
            self.log("Done." if ok else "Export cancelled.")

    def export(self, out_dir: str | os.PathLike, video: bool = True) -> None:
        for _ in self.export_iter(out_dir, video):
            pass

    def colours(self) -> np.ndarray:
        """``(K+1)×3`` uint8 object colours (for the view's object buttons)."""
        return object_colours(self.num_objects)
