"""Random thin-plate-spline (TPS) warps of an image and its mask (numpy + OpenCV), the synthetic deformation of
propagation stage 0 (as in Mask-Propagation): 12 random control points, each displaced by N(0, scale) in normalised
coordinates; the content at a source point moves to its displaced point."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r² log r² (0 at r = 0), the 2-D thin-plate radial basis, from squared distances."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(r2), 0.0)


def tps_fit(points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fit an interpolating TPS: ``points`` N×2, ``values`` N×D → coefficients (N+3)×D (N radial weights,
    then the affine part [1, x, y])."""
    n = points.shape[0]
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(d2)
    system[:n, n] = 1.0
    system[:n, n + 1:] = points
    system[n, :n] = 1.0
    system[n + 1:, :n] = points.T
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[:n] = values
    # lstsq: robust to (near-)coincident control points
    return np.linalg.lstsq(system, rhs, rcond=None)[0]


def tps_evaluate(coefficients: np.ndarray, points: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Evaluate a fitted TPS at ``query`` M×2 → M×D."""
    n = points.shape[0]
    d2 = ((query[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    return _tps_kernel(d2) @ coefficients[:n] + coefficients[n] + query @ coefficients[n + 1:]


def tps_remap_grid(src_points: np.ndarray, dst_points: np.ndarray, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, where to sample the input (``cv2.remap`` maps, float32 H×W each) so that
    the content at ``src_points`` (N×2, normalised x, y in [0, 1]) ends up at ``dst_points``."""
    ys, xs = np.mgrid[0:height, 0:width]
    grid = np.stack([xs.ravel() / width, ys.ravel() / height], 1)
    coefficients = tps_fit(dst_points, src_points - dst_points)
    source = grid + tps_evaluate(coefficients, dst_points, grid)
    map_x = (source[:, 0] * width).reshape(height, width).astype(np.float32)
    map_y = (source[:, 1] * height).reshape(height, width).astype(np.float32)
    return map_x, map_y


def random_tps_warp(image: Image.Image, mask: Image.Image, scale: float = 0.02, n_ctrl_pts: int = 12,
                    rng=np.random) -> tuple[Image.Image, Image.Image]:
    """Warp ``image`` (bilinear) and ``mask`` (nearest) of the same size with one random TPS; sizes and mask
    values are kept (no new labels appear)."""
    width, height = image.size
    xs = rng.choice(width, size=n_ctrl_pts, replace=width < n_ctrl_pts) / width
    ys = rng.choice(height, size=n_ctrl_pts, replace=height < n_ctrl_pts) / height
    src = np.stack([xs, ys], 1)
    dst = src + rng.normal(scale=scale, size=src.shape)
    map_x, map_y = tps_remap_grid(src, dst, height, width)
    warped_image = cv2.remap(np.asarray(image), map_x, map_y, cv2.INTER_LINEAR)
    warped_mask = cv2.remap(np.asarray(mask), map_x, map_y, cv2.INTER_NEAREST)
    return Image.fromarray(warped_image), Image.fromarray(warped_mask)
