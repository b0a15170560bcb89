"""Export of a session at the video's original resolution (Qt-free): palette masks, overlays, a video."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from gui.overlay import overlay
from util.fileio import atomic_path
from util.palette import save_mask_png


def even_frame(image: np.ndarray) -> np.ndarray:
    """``H×W×3`` → the same image with its last row / column repeated where H / W is odd. OpenCV's mp4
    encoders drop an odd last row and column; padding keeps every pixel of the clip."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def export_steps(frames, masks: np.ndarray, out: Path, mode: str, num_objects: int, video: bool = True,
                 log: Callable[[str], None] = print) -> Iterator[tuple[int, int]]:
    """Write ``out/mask/%05d.png`` (palette, object ids) and ``out/overlay/%05d.png`` (overlay ``mode``)
    at ``frames.original_size`` (``masks`` ``T×H×W`` uint8 at the working size, nearest-resized up), plus
    ``out/overlay.mp4`` (even-sized, see :func:`even_frame`). Yields ``(frames_done, T)``; closing the
    generator early cancels and leaves no partial video (every file is written atomically)."""
    n = len(masks)
    with contextlib.ExitStack() as stack:
        writer = None
        ow, oh = frames.original_size
        if video:
            tmp_video = stack.enter_context(atomic_path(out / "overlay.mp4"))   # ends in .mp4
            writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"),
                                     float(getattr(frames, "fps", 25.0)), (ow + ow % 2, oh + oh % 2))
            if not writer.isOpened():
                log("OpenCV cannot write mp4 here; the overlay video is skipped.")
                writer = None
            else:
                stack.callback(writer.release)   # runs before the atomic rename
        for t in range(n):
            mask = np.asarray(masks[t])
            if mask.shape != (oh, ow):
                mask = cv2.resize(mask, (ow, oh), interpolation=cv2.INTER_NEAREST)
            save_mask_png(out / "mask" / f"{t:05d}.png", mask)
            vis = cv2.cvtColor(overlay(frames.read_original(t), mask, mode, num_objects), cv2.COLOR_RGB2BGR)
            with atomic_path(out / "overlay" / f"{t:05d}.png") as tmp:   # ends in .png
                if not cv2.imwrite(str(tmp), vis):
                    raise OSError(f"cannot write {tmp}")
            if writer is not None:
                writer.write(even_frame(vis))
            yield t + 1, n
