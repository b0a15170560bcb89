"""The session workspace: autosaved masks + a session file, so work survives a crash or a kill.

Layout of ``DIR`` (default ``workspace/<video name>``)::

    session.json      video identity, working size, object count, interacted frames, cursor
    masks/00000.png   palette PNG per frame at the working resolution (object ids)

Every write is atomic (``util.fileio``), masks first, then ``session.json``; so the session file
never refers to half-written masks. A workspace written for another video is never touched:
:meth:`Workspace.open` reports the mismatch and the session continues with autosave off.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from util.fileio import atomic_write_text
from util.palette import load_mask_png, save_mask_png

SESSION_FILE = "session.json"
MASK_DIR = "masks"
FORMAT_VERSION = 1


class WorkspaceError(RuntimeError):
    """The workspace cannot be used (other video, unreadable session file). One-line message."""


@dataclass
class SessionState:
    """What a workspace restores."""
    num_objects: int
    cursor: int = 0
    interacted: list[int] = field(default_factory=list)
    pending_frame: int | None = None      # frame with an interaction that was not propagated yet
    masks: dict[int, np.ndarray] = field(default_factory=dict)   # t → H×W uint8 at the working size


def same_video(saved: dict, current: dict) -> str | None:
    """``None`` if ``saved`` and ``current`` identities describe the same video, else the reason."""
    for key, what in (("frames", "frame count"), ("width", "width"), ("height", "height"), ("hash", "content")):
        if saved.get(key) != current.get(key):
            if key == "hash":
                return "its frames differ"
            return f"{what} {saved.get(key)} ≠ {current.get(key)}"
    return None


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.writable = True
        self.identity: dict | None = None
        self.working_size: tuple[int, int] | None = None
        self._saved_crc: dict[int, int] = {}

    @property
    def session_path(self) -> Path:
        return self.root / SESSION_FILE

    @property
    def mask_dir(self) -> Path:
        return self.root / MASK_DIR

    def mask_path(self, t: int) -> Path:
        return self.mask_dir / f"{t:05d}.png"

    def open(self, identity: dict, working_size: tuple[int, int]) -> SessionState | None:
        """Bind to a video. Returns the saved state to resume, ``None`` for a fresh workspace.

        Raises :class:`WorkspaceError` (and turns autosave off) if the workspace belongs to another
        video or its session file is unreadable; nothing in it is modified afterwards.
        """
        self.identity = identity
        self.working_size = tuple(working_size)
        if not self.session_path.exists():
            if self.root.exists() and self.mask_dir.exists() and any(self.mask_dir.iterdir()):
                self.writable = False
                raise WorkspaceError(f"workspace {self.root}: has masks but no {SESSION_FILE}; "
                                     "pass another --workspace DIR (autosave is off for this session)")
            return None
        try:
            data = json.loads(self.session_path.read_text(encoding="utf-8"))
            saved_id = data["video"]
            num_objects = int(data["num_objects"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.writable = False
            raise WorkspaceError(f"workspace {self.root}: {SESSION_FILE} is unreadable ({type(e).__name__}); "
                                 "pass another --workspace DIR (autosave is off for this session)") from None
        reason = same_video(saved_id, identity)
        if reason is not None:
            self.writable = False
            raise WorkspaceError(
                f"workspace {self.root} belongs to another video ({saved_id.get('path')}: {reason}); "
                "pass --workspace NEW_DIR or delete that folder to start over (autosave is off, nothing "
                "there was changed)")
        state = SessionState(num_objects=num_objects, cursor=int(data.get("cursor", 0)),
                             interacted=[int(t) for t in data.get("interacted", [])],
                             pending_frame=data.get("pending_frame"))
        w, h = self.working_size
        for t in range(int(identity["frames"])):
            p = self.mask_path(t)
            if not p.exists():
                continue
            m = load_mask_png(p)
            if m.shape != (h, w):
                # the workspace was made at another --resolution: nearest keeps the object ids
                m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
            else:
                self._saved_crc[t] = zlib.crc32(m.tobytes())
            state.masks[t] = m
        return state

    def save_masks(self, masks: np.ndarray, frames=None) -> int:
        """Write the masks (``T×H×W`` uint8) of ``frames`` (default all) that changed since the
        last save. Returns the number of files written."""
        if not self.writable:
            return 0
        n = 0
        for t in (range(len(masks)) if frames is None else frames):
            m = np.ascontiguousarray(masks[t])
            crc = zlib.crc32(m.tobytes())
            if self._saved_crc.get(t) == crc and self.mask_path(t).exists():
                continue
            save_mask_png(self.mask_path(t), m)
            self._saved_crc[t] = crc
            n += 1
        return n

    def save_session(self, num_objects: int, cursor: int, interacted, pending_frame: int | None) -> None:
        if not self.writable:
            return
        data = {"format": FORMAT_VERSION, "video": self.identity,
                "working_size": list(self.working_size) if self.working_size else None,
                "num_objects": int(num_objects), "cursor": int(cursor),
                "interacted": sorted(int(t) for t in interacted),
                "pending_frame": None if pending_frame is None else int(pending_frame),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(self.session_path, json.dumps(data, indent=1))
