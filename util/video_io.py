"""Lazy frame sources: an image folder or an OpenCV-readable video, decoded on demand.

A frame source is what :class:`inference_core.InferenceCore` and the GUI read frames from:
``len(src)`` frames, ``src[t]`` → ``H×W×3`` uint8 RGB at the working resolution (shorter side
resized to ``resolution`` with ``new = w*res//min(w,h)``, bicubic; ``resolution <= 0`` keeps the
original size). The longer side is bounded to ``MAX_ASPECT × resolution``: a very elongated frame
(e.g. 10000×10) is scaled so its longer side fits, instead of growing to 480000×480 and exhausting
memory; if that leaves the shorter side below ``MIN_SIDE`` pixels the source is refused. Decoded frames live in a bounded LRU cache, so a long video never has to fit in
RAM. ``src.read_original(t)`` gives the frame at the video's own resolution (for export).

Bad input raises :class:`FrameSourceError` with a one-line message naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFAULT_CACHE_FRAMES = 64
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# the working frame's longer side is at most MAX_ASPECT × resolution (4:1 panoramas keep the shorter side)
MAX_ASPECT = 4
# below this the networks' stride-16 features have no room for an object
MIN_SIDE = 16


class FrameSourceError(ValueError):
    """A video or image folder cannot be used. The message is one line and names the fix."""


def working_size(w: int, h: int, resolution: int) -> tuple[int, int]:
    """``(new_w, new_h)`` with the shorter side = ``resolution`` (integer floor, as the original), unless
    the longer side would exceed ``MAX_ASPECT × resolution``: then the longer side is that bound and the
    shorter side follows the aspect ratio (at least 1 pixel)."""
    if resolution is None or resolution <= 0:
        return w, h
    s, long_side = min(w, h), max(w, h)
    if long_side * resolution // s <= MAX_ASPECT * resolution:
        return w * resolution // s, h * resolution // s
    bound = MAX_ASPECT * resolution
    return max(1, w * bound // long_side), max(1, h * bound // long_side)


def check_working_size(flag: str, path, original: tuple[int, int], size: tuple[int, int], resolution: int) -> None:
    """Refuse a working size whose shorter side is below ``MIN_SIDE`` (an extremely elongated frame)."""
    if min(size) < MIN_SIDE:
        raise FrameSourceError(
            f"{flag} {path}: frames are {original[0]}x{original[1]}; at --resolution {resolution} (longer side "
            f"bounded to {MAX_ASPECT}x that) they would be processed at {size[0]}x{size[1]}, too small to "
            f"segment; crop the frames to a less elongated shape or pass --resolution -1")


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an ``H×W×3`` uint8 frame to ``size`` = (w, h); no-op when equal."""
    if (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_CUBIC)


class FrameSource:
    """Base class: lazy, cached, thread-safe frame access (the GUI and a worker thread share it)."""

    path: Path
    original_size: tuple[int, int]   # (w, h) of the stored frames
    size: tuple[int, int]            # (w, h) at the working resolution
    fps: float = 25.0
    notice: str | None = None        # one line worth telling the user (e.g. a truncated video)

    def __init__(self, resolution: int, cache_frames: int):
        self.resolution = resolution
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))
        self._lock = threading.RLock()

    # --- to implement ---
    def __len__(self) -> int:
        raise NotImplementedError

    def _decode(self, t: int) -> np.ndarray:
        """Frame ``t`` at the original resolution, ``H×W×3`` uint8 RGB."""
        raise NotImplementedError

    # --- public ---
    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def width(self) -> int:
        return self.size[0]

    def _check_index(self, t: int) -> int:
        t = int(t)
        if t < 0:
            t += len(self)
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} is outside the clip (0..{len(self) - 1})")
        return t

    def read_original(self, t: int) -> np.ndarray:
        t = self._check_index(t)
        with self._lock:
            return self._decode(t)

    def __getitem__(self, t: int) -> np.ndarray:
        t = self._check_index(t)
        with self._lock:
            frame = self._cache.get(t)
            if frame is not None:
                self._cache.move_to_end(t)
                return frame
            frame = resize_frame(self._decode(t), self.size)
            self._cache[t] = frame
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
            return frame

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    @property
    def cached_frames(self) -> int:
        return len(self._cache)

    def fingerprint(self) -> str:
        """Hash of a few original frames (first, middle, last): identifies the content of the video."""
        h = hashlib.sha1()
        n = len(self)
        for t in sorted({0, n // 2, n - 1}):
            f = self.read_original(t)
            # hash a coarse thumbnail: robust to decoder rounding, still specific to the content
            thumb = cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) // 16
            h.update(np.ascontiguousarray(thumb).tobytes())
        return h.hexdigest()

    def identity(self) -> dict:
        """What a workspace records to recognise this video again."""
        return {"path": str(self.path.resolve()), "frames": len(self),
                "width": self.original_size[0], "height": self.original_size[1],
                "hash": self.fingerprint()}


class ImageFolderSource(FrameSource):
    """Sorted ``*.jpg`` files of a folder (``*.png`` if there are no jpgs), as the original."""

    def __init__(self, folder: str | os.PathLike, resolution: int = 480, cache_frames: int = DEFAULT_CACHE_FRAMES):
        super().__init__(resolution, cache_frames)
        self.path = Path(folder)
        if not self.path.is_dir():
            raise FrameSourceError(f"--images {folder}: not a folder; pass a folder of .jpg/.png frames")
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not files:
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise FrameSourceError(f"--images {folder}: no .jpg or .png frames in this folder; "
                                   "pass a folder of numbered frames (00000.jpg, 00001.jpg, ...)")
        self.files = files
        sizes = {}
        for f in files:
            try:
                with Image.open(f) as im:   # reads the header only
                    sizes.setdefault(im.size, f)
            except (OSError, ValueError) as e:
                raise FrameSourceError(f"--images {folder}: cannot read {f.name} ({type(e).__name__}); "
                                       "remove or re-export that frame") from None
        if len(sizes) > 1:
            (s1, f1), (s2, f2) = list(sizes.items())[:2]
            raise FrameSourceError(f"--images {folder}: frames have different sizes ({f1.name} is "
                                   f"{s1[0]}x{s1[1]}, {f2.name} is {s2[0]}x{s2[1]}); resize them to one size")
        self.original_size = next(iter(sizes))
        self.size = working_size(*self.original_size, resolution)
        check_working_size("--images", folder, self.original_size, self.size, resolution)

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, t: int) -> np.ndarray:
        with Image.open(self.files[t]) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)


class VideoFileSource(FrameSource):
    """A video file read with OpenCV; frames are decoded sequentially and seeks used only when
    the requested frame is not the next one.

    ``claimed_frames`` is the container's frame count; when fewer frames decode (a truncated file),
    ``len()`` is the decodable count and ``notice`` says so in one line (``None`` otherwise)."""

    def __init__(self, path: str | os.PathLike, resolution: int = 480, cache_frames: int = DEFAULT_CACHE_FRAMES):
        super().__init__(resolution, cache_frames)
        self.path = Path(path)
        self.notice: str | None = None
        if not self.path.is_file():
            raise FrameSourceError(f"--video {path}: file not found; pass an existing video or --images FOLDER")
        self._cap = cv2.VideoCapture(str(self.path))
        self._next = 0
        ok, first = (self._cap.read() if self._cap.isOpened() else (False, None))
        if not ok or first is None:
            raise FrameSourceError(f"--video {path}: OpenCV cannot decode this file; convert it to .mp4 "
                                   "(e.g. ffmpeg -i in.mov out.mp4) or extract frames and pass --images FOLDER")
        self._next = 1
        self.original_size = (first.shape[1], first.shape[0])
        self.size = working_size(*self.original_size, resolution)
        check_working_size("--video", path, self.original_size, self.size, resolution)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.claimed_frames = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._len = self._count_frames(self.claimed_frames)
        if 0 < self._len < self.claimed_frames:
            self.notice = (f"--video {path}: the file claims {self.claimed_frames} frames but only "
                           f"{self._len} decode (truncated?); processing those {self._len} frames")

    def _count_frames(self, reported: int) -> int:
        # the container's count can be off; trust it only if its last frame can be decoded
        if reported > 0:
            self._rewind()
            if reported == 1 or self._cap.set(cv2.CAP_PROP_POS_FRAMES, reported - 1):
                ok, _ = self._cap.read()
                ok_after, _ = self._cap.read()
                if ok and not ok_after:
                    self._rewind()
                    return reported
        self._rewind()
        n = 0
        while self._cap.grab():
            n += 1
        self._rewind()
        return max(n, 1)   # frame 0 decoded in __init__

    def _rewind(self) -> None:
        # reopening is the only reliable way back to frame 0: after the end of a stream (e.g. a 1-frame
        # video) a seek to 0 is accepted but the next read fails
        self._cap.release()
        self._cap = cv2.VideoCapture(str(self.path))
        self._next = 0

    def __len__(self) -> int:
        return self._len

    def _decode(self, t: int) -> np.ndarray:
        if t != self._next:
            if t == 0:
                self._rewind()
            else:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, t)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            # a failed seek: decode from the start (slow but exact)
            self._rewind()
            for _ in range(t):
                self._cap.grab()
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise FrameSourceError(f"--video {self.path}: frame {t} cannot be decoded; the file may be "
                                       "truncated — re-encode it or pass --images FOLDER")
        self._next = t + 1
        if frame.shape[1::-1] != self.original_size:
            raise FrameSourceError(f"--video {self.path}: frame {t} is {frame.shape[1]}x{frame.shape[0]}, "
                                   f"not {self.original_size[0]}x{self.original_size[1]}; re-encode the video")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def open_frames(images: str | None = None, video: str | None = None, resolution: int = 480,
                cache_frames: int = DEFAULT_CACHE_FRAMES) -> FrameSource:
    """``--images`` wins over ``--video`` (as the original)."""
    if images:
        return ImageFolderSource(images, resolution, cache_frames)
    if video:
        return VideoFileSource(video, resolution, cache_frames)
    raise FrameSourceError("no input: pass --images FOLDER or --video FILE")
