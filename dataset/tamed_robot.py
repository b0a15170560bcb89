"""A scribble robot for error regions (S2M's "tamed" davis-interactive robot).

The error mask is halved (area interpolation), opened with a disk (radius ∝ sqrt(area), shrunk until something
survives), skeletonised (``skimage`` medial axis); skeleton pixels become a radius-√2 neighbour graph
(``sklearn``), each connected component loses its cycles (heaviest edge first, ``networkx``), its longest path
(two BFS passes) is smoothed by a Bézier curve and drawn back at full resolution with 8-connected lines.
"""
from __future__ import annotations

import cv2
import networkx as nx
import numpy as np
from scipy.special import comb
from skimage.morphology import disk, medial_axis
from sklearn.neighbors import radius_neighbors_graph


def bezier_curve(points: np.ndarray, nb_points: int = 1000) -> np.ndarray:
    """Bézier curve with the N×2 ``points`` as control points, sampled at ``min(nb_points, 1000)`` points
    (Bernstein polynomials); returns the points unchanged when there are more of them than samples."""
    nb_points = min(nb_points, 1000)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"bezier_curve: points must be N×2, got {points.shape}")
    n_points = len(points)
    if n_points > nb_points:
        return points
    t = np.linspace(0.0, 1.0, nb_points)[None]
    i = np.arange(n_points)[:, None]
    n = n_points - 1
    bernstein = comb(n, i) * t ** (n - i) * (1 - t) ** i
    return bernstein.T @ points


class TamedRobot:
    """``interact(error_mask H×W uint8 {0,1}) -> scribble H×W uint8 {0,1}``: 1-pixel lines inside the error
    region (up to a pixel off its border, from the half-resolution skeleton and the curve smoothing)."""

    def __init__(self, kernel_size: float = 0.15, max_kernel_radius: float = 16, min_nb_nodes: int = 4,
                 nb_points: int = 1000):
        self.kernel_size = kernel_size
        self.max_kernel_radius = max_kernel_radius
        self.min_nb_nodes = min_nb_nodes  # kept for parity with the original; unused there too
        self.nb_points = nb_points

    def skeleton(self, mask: np.ndarray) -> np.ndarray:
        """Medial axis of ``mask`` after an opening whose disk radius is ``min(0.15·sqrt(area)/2, 16)``, ×0.9
        until the opened mask is not empty (no opening once the radius is ≤ 1)."""
        mask = np.asarray(mask, dtype=np.uint8)
        radius = min(self.kernel_size * np.sqrt(np.count_nonzero(mask)) * 0.5, self.max_kernel_radius)
        opened = mask
        while radius > 1.0:
            kernel = disk(radius).astype(np.uint8)
            opened = cv2.dilate(cv2.erode(mask, kernel, borderValue=1), kernel, borderValue=0)
            if opened.any():
                break
            radius *= 0.9
        padded = np.pad(opened > 0, 1, mode="constant", constant_values=False)
        # medial_axis breaks ties randomly; draw its seed from numpy so that seeded runs repeat
        return medial_axis(padded, rng=np.random.randint(2 ** 31))[1:-1, 1:-1]

    @staticmethod
    def skeleton_graph(skeleton: np.ndarray) -> tuple[nx.Graph, np.ndarray] | None:
        """Skeleton pixels → (graph linking pixels at distance ≤ √2, weighted by distance; N×2 (x, y))."""
        ys, xs = np.nonzero(skeleton)
        if len(xs) == 0:
            return None
        points = np.stack([xs, ys], 1)
        graph = nx.from_scipy_sparse_array(radius_neighbors_graph(points, np.sqrt(2), mode="distance"))
        return graph, points

    @staticmethod
    def acyclic_components(graph: nx.Graph) -> list[nx.Graph]:
        """Connected components with every cycle broken at its heaviest edge."""
        trees = []
        for component in nx.connected_components(graph):
            g = graph.subgraph(component).copy()
            while True:
                try:
                    cycle = nx.find_cycle(g)
                except nx.NetworkXNoCycle:
                    break
                weights = [graph[u][v]["weight"] for u, v in cycle]
                g.remove_edge(*cycle[int(np.argmax(weights))])
            trees.append(g)
        return trees

    @staticmethod
    def longest_path(tree: nx.Graph) -> list[int]:
        """Longest path of a tree: the farthest node from any node, then the farthest path from it."""
        start = next(iter(tree.nodes()))
        distance = nx.single_source_shortest_path_length(tree, start)
        far = max(distance.items(), key=lambda item: item[1])[0]
        return list(max(nx.single_source_shortest_path(tree, far).values(), key=len))

    def interact(self, error_mask: np.ndarray) -> np.ndarray:
        out = np.zeros_like(error_mask, dtype=np.uint8)
        small = (cv2.resize(error_mask.astype(np.uint8), dsize=None, fx=0.5, fy=0.5,
                            interpolation=cv2.INTER_AREA) > 0.5).astype(np.uint8)
        graph_points = self.skeleton_graph(self.skeleton(small))
        if graph_points is None:
            return out
        graph, points = graph_points
        for tree in self.acyclic_components(graph):
            path = bezier_curve(points[self.longest_path(tree)], self.nb_points)
            line = np.round(path * 2).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [line], isClosed=False, color=1, thickness=1, lineType=cv2.LINE_8)
        return out
