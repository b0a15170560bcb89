"""The benchmark's workload: deterministic clips, the user's interactions on them, and how results compare.

* :func:`dataset.synthetic.make_clip` clips for the timed workload; :class:`ProceduralClip` for the long
  clip (frames generated per index, never held as an array);
* round masks (:func:`one_hot`, :func:`spoil_labels`: the round-2 correction), an S2M scribble canvas
  (:func:`make_scribbles`) and f-BRS clicks (:func:`fbrs_clicks`) derived from the ground truth;
* :func:`agreement` (pixel agreement of two label maps) and :func:`original_layout_bytes` (the memory the
  original's data layout would take for a clip).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from benchmark.errors import BenchmarkError

# query features per h×w cell (f16 1024 + f8 512·4 + f4 256·16 + k16 128 + v16 512) and memory per object
# and cell (k16 128 + v16 512): used for the original-layout estimate of the long clip
FEATURE_FLOATS_PER_CELL = 1024 + 512 * 4 + 256 * 16 + 128 + 512
MEMORY_FLOATS_PER_CELL = 128 + 512
KEY_FLOATS_PER_CELL = 128
# memory cells each query cell reads (the propagation network's top-k)
TOP_K = 50
# the original's query-feature buffer, in frames (mem_profile 0/1)
ORIGINAL_BUFFER_FRAMES = 105


def one_hot(labels: np.ndarray, num_objects: int) -> torch.Tensor:
    """``H×W`` labels → ``(K+1)×1×H×W`` float32 one-hot, background first."""
    ids = np.arange(num_objects + 1, dtype=labels.dtype).reshape(-1, 1, 1)
    return torch.from_numpy((labels[None] == ids).astype(np.float32)).unsqueeze(1)


def spoil_labels(labels: np.ndarray, num_objects: int, seed: int, discs: int = 4) -> np.ndarray:
    """The ground truth with ``discs`` wrong discs (each painted with a different label): the
    'user correction' of round 2 differs from round 1 in known places."""
    import cv2
    rng = np.random.default_rng(seed)
    out = labels.copy()
    h, w = labels.shape
    radius = max(3, int(0.05 * min(h, w)))
    for i in range(discs):
        # half the discs on objects (erasing part of them), half anywhere
        ys, xs = np.nonzero(labels > 0) if i % 2 == 0 and labels.any() else np.nonzero(np.ones_like(labels))
        j = int(rng.integers(len(ys)))
        cy, cx = int(ys[j]), int(xs[j])
        wrong = (int(labels[cy, cx]) + 1 + int(rng.integers(num_objects))) % (num_objects + 1)
        cv2.circle(out, (cx, cy), radius, int(wrong), -1)
    return out


def interior_point(mask: np.ndarray, exclude: list[tuple[int, int]] = (), exclude_radius: float = 0) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border (and from the ``exclude`` points)."""
    import cv2
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    if exclude:
        yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
        for x, y in exclude:
            dist[(yy - y) ** 2 + (xx - x) ** 2 < exclude_radius ** 2] = 0
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def make_scribbles(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """A GUI scribble canvas (255 none, 0 background, k object k): one stroke inside every object along
    its widest interior row and one background stroke just outside the objects."""
    import cv2
    h, w = labels.shape
    canvas = np.full((h, w), 255, np.uint8)
    thick = max(2, min(h, w) // 120)
    kernel = np.ones((2 * thick + 3, 2 * thick + 3), np.uint8)
    for k in range(1, num_objects + 1):
        inner = cv2.erode((labels == k).astype(np.uint8), kernel)
        if not inner.any():
            continue
        x, y = interior_point(inner)
        # the interior run of that row through (x, y)
        left = x
        while left - 1 >= 0 and inner[y, left - 1]:
            left -= 1
        right = x
        while right + 1 < w and inner[y, right + 1]:
            right += 1
        cv2.line(canvas, (left, y), (right, y), int(k), thick)
    background = cv2.erode((labels == 0).astype(np.uint8), np.ones((15, 15), np.uint8))
    ys, xs = np.nonzero(background)
    if len(ys):
        y = int(np.median(ys))
        row = np.nonzero(background[y])[0]
        cv2.line(canvas, (int(row[0]), y), (int(row[0]) + max(4, w // 6), y), 0, thick)
        canvas[(labels != 0) & (canvas == 0)] = 255  # a background stroke never crosses an object
    return canvas


def fbrs_clicks(labels: np.ndarray) -> list[tuple[int, int, bool]]:
    """Three clicks (x, y, positive) on object 1: two positive inside it, one negative next to it."""
    import cv2
    obj = labels == 1
    if not obj.any():
        raise BenchmarkError("the f-BRS frame has no object 1; choose another --size/--frames")
    first = interior_point(obj)
    radius = max(4.0, 0.5 * float(cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5).max()))
    second = interior_point(obj, [first], radius)
    ring = cv2.dilate(obj.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & (labels == 0)
    if not ring.any():
        ring = labels == 0
    ys, xs = np.nonzero(ring)
    j = int(np.argmin((ys - first[1]) ** 2 + (xs - first[0]) ** 2))
    return [(first[0], first[1], True), (second[0], second[1], True), (int(xs[j]), int(ys[j]), False)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same label (1.0 = identical)."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare masks of shapes {a.shape} and {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0



class ProceduralClip:
    """A long clip generated per frame on demand (``len()``, ``[t] -> H×W×3 uint8 RGB``, ``labels(t)``):
    ``num_objects`` textured ellipses drifting and turning over a textured background. Holds only the
    background and the object textures (a few MB), never the frames; deterministic from ``seed``."""

    def __init__(self, num_frames: int, width: int, height: int, num_objects: int, seed: int = 0):
        import cv2
        self.num_frames, self.width, self.height, self.num_objects = num_frames, width, height, num_objects
        self.seed = seed
        rng = np.random.default_rng(seed)

        def texture(h: int, w: int, cell: int) -> np.ndarray:
            coarse = rng.random((h // cell + 2, w // cell + 2, 3), dtype=np.float32)
            return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)

        self.background = (255 * (0.25 + 0.5 * texture(height, width, 24))).astype(np.uint8)
        short = min(width, height)
        self.objects = []
        for k in range(num_objects):
            axes = (short * float(rng.uniform(0.10, 0.16)), short * float(rng.uniform(0.07, 0.11)))
            size = int(2 * max(axes)) + 4
            tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
            tex = (255 * np.clip(texture(size, size, 6) * tint, 0, 1)).astype(np.uint8)
            centre = np.array([width * (k + 0.5) / num_objects, height * float(rng.uniform(0.35, 0.65))])
            amplitude = np.array([width * 0.5 / num_objects - max(axes), height * 0.3])
            self.objects.append({"axes": axes, "texture": tex, "centre": centre, "amplitude": amplitude,
                                 "omega": rng.uniform(0.01, 0.03, size=2), "phase": rng.uniform(0, 2 * math.pi, 2),
                                 "angle0": float(rng.uniform(0, 180)), "spin": float(rng.uniform(-1.5, 1.5))})

    def __len__(self) -> int:
        return self.num_frames

    def _object_masks(self, t: int) -> list[tuple[np.ndarray, tuple[int, int, int, int], dict]]:
        import cv2
        out = []
        for obj in self.objects:
            cx, cy = obj["centre"] + obj["amplitude"] * np.sin(obj["omega"] * t + obj["phase"])
            mask = np.zeros((self.height, self.width), np.uint8)
            cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(obj["axes"][0]), int(obj["axes"][1])),
                        obj["angle0"] + obj["spin"] * t, 0, 360, 1, -1)
            out.append((mask, (int(round(cx)), int(round(cy))), obj))
        return out

    def labels(self, t: int) -> np.ndarray:
        """Ground truth of frame ``t``: ``H×W`` uint8 (later objects occlude earlier ones)."""
        label = np.zeros((self.height, self.width), np.uint8)
        for k, (mask, _, _) in enumerate(self._object_masks(t), 1):
            label[mask > 0] = k
        return label

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= int(t) < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1}")
        t = int(t)
        frame = self.background.copy()
        for mask, (cx, cy), obj in self._object_masks(t):
            tex = obj["texture"]
            # tile the object's texture around its centre so it moves with the object
            reps = (self.height // tex.shape[0] + 3, self.width // tex.shape[1] + 3, 1)
            tiled = np.tile(tex, reps)
            oy, ox = tex.shape[0] - cy % tex.shape[0], tex.shape[1] - cx % tex.shape[1]
            tiled = tiled[oy:oy + self.height, ox:ox + self.width]
            frame[mask > 0] = tiled[mask > 0]
        noise = np.random.default_rng([self.seed, t]).integers(-3, 4, size=frame.shape, dtype=np.int16)
        return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def original_layout_bytes(t: int, k: int, nh: int, nw: int) -> dict[str, int]:
    """Memory of the original MiVOS's layout for a clip: float32 images, float32 probabilities and the
    105-frame query-feature buffer (mem_profile 0/1)."""
    cells = (nh // 16) * (nw // 16)
    parts = {"images_float32": t * 3 * nh * nw * 4,
             "probabilities_float32": (k + 1) * t * nh * nw * 4,
             "feature_buffer_105_frames": ORIGINAL_BUFFER_FRAMES * FEATURE_FLOATS_PER_CELL * cells * 4}
    parts["total"] = sum(parts.values())
    return parts

