"""BL30K scene configurations for the BlenderProc-based renderer.

Each YAML describes one 160-frame video: a camera, 3–5 ShapeNet objects and 1–3 point lights that
move along smooth degree-4 polynomial trajectories, a skybox, and the RGB + instance-segmentation
renderers. Object paths are kept apart greedily (a new path closer than 0.75 to an earlier one at
any time is redrawn, up to 50 times).

    python generation/blender/generate_yaml.py --models ShapeNetCore.v2 --texture textures \\
        --num_samples 1000 --prefix a --seed 0 yaml_a

Deterministic: the same ``--seed`` and the same input trees give byte-identical files (folder
listings are sorted; all random numbers come from one ``numpy.random.RandomState(seed)``, drawn in
the original's order, so with sorted listings the output equals the original script seeded with
``np.random.seed(seed)``). ``<args:0>``, ``<args:1>`` and ``<args:2>`` in the files are the
models root, texture root and output root the renderer is given.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.polynomial.polynomial as npoly
import yaml
from scipy import optimize

# ---------------------------------------------------------------- hyper-parameters of the original BL30K generator
N_FRAMES = 160
RES_X = 256 * 3  # 768
RES_Y = 256 * 2  # 512
CAM_MIN_FOV, CAM_MAX_FOV = 0.7, 0.8

DEGREE = 4  # trajectory polynomials: 5 control points at t = 0, .25, .5, .75, 1

MIN_NUM_OBJ, MAX_NUM_OBJ = 3, 5

OBJ_MIN_SCALE, OBJ_MAX_SCALE = 1.25, 3.0  # per axis
MIN_SCALE_CHANGE, MAX_SCALE_CHANGE = 0.8, 1.25  # over the whole video; per segment the DEGREE-th root

# Per-frame motion limits; they only set the spread of the control points (std of a normal over
# N_FRAMES / DEGREE frames), so the rendered motion does not follow them strictly.
OBJ_MAX_TSL_PER_FRAME = 0.03
OBJ_MAX_ROT_PER_FRAME = 0.02
CAM_MAX_TSL_PER_FRAME = 0.10
CAM_LOOK_AT_MAX_SHIFT = 0.10

ENTER_STATIC_PROB = 0.10
CONTI_STATIC_PROB = 0.35  # while static, each step leaves the static state with prob 1 - 0.35

MIN_NUM_LIGHTS, MAX_NUM_LIGHTS = 1, 3
LIGHT_MIN_STR, LIGHT_MAX_STR = 1000, 15000
LIGHT_RADIUS = 11
LIGHT_DEGREE = 0  # lights do not move
LIGHT_BASE_COLOR = np.array([0.5, 0.5, 0.5])
LIGHT_MOD_COLOR = 0.5

SKY_LIGHT_MIN, SKY_LIGHT_MAX = 0.1, 1.0
SKYBOX_LOCATION = [0, 12, 0]
SKYBOX_ROTATION = [float(np.pi / 2), 0, 0]

MAPPED_REPLACE_PROB = 0.5  # texture replacement when the model has its own texture map (map_Kd)
UNMAPPED_REPLACE_PROB = 1.0

# Bounding volumes (larger than the viewing frustum). "base" = x and z, "into" = y (depth).
CAM_MIN_BASE, CAM_MAX_BASE = -0.3, 0.3
CAM_MIN_INTO, CAM_MAX_INTO = -6.0, -5.0
LKA_MIN_BASE, LKA_MAX_BASE = -0.5, 0.5  # the camera's look-at target
LKA_MIN_INTO, LKA_MAX_INTO = 3.0, 4.0
OBJ_MIN_BASE, OBJ_MAX_BASE = -1.05, 1.05  # at the nearest depth; the frustum widens with depth
OBJ_MIN_INTO, OBJ_MAX_INTO = -2.0, 5.0

PATH_MIN_DIST = 0.75
PATH_MAX_TRIALS = 50

MODEL_FILE = Path("models") / "model_normalized.obj"


# ---------------------------------------------------------------- sampling helpers

class Sampler:
    """Walks a random permutation of ``items`` and re-permutes when it is used up, so every item is
    drawn about equally often (plain random choice would be binomially uneven)."""

    def __init__(self, items: Sequence[str], rng: np.random.RandomState) -> None:
        if not items:
            raise ValueError("Sampler needs at least one item")
        self.items = list(items)
        self.rng = rng
        self.order = self._permute()
        self.idx = 0

    def _permute(self) -> list[str]:
        return [self.items[i] for i in self.rng.permutation(len(self.items))]

    def next(self) -> str:
        if self.idx == len(self.order):
            self.order = self._permute()
            self.idx = 0
        item = self.order[self.idx]
        self.idx += 1
        return item

    def step_back(self) -> None:
        """Offer the last item again (its trajectory was rejected, not the object)."""
        self.idx -= 1
        if self.idx == -1:
            self.idx = len(self.order) - 1


def uniform(rng: np.random.RandomState, lo: float, hi: float, n: int | None = None):
    """U(lo, hi): a float, or an array of ``n``."""
    if n is None:
        return rng.rand() * (hi - lo) + lo
    return rng.rand(n) * (hi - lo) + lo


def frustum_half_width(y: float | np.ndarray, base: float = OBJ_MAX_BASE, min_into: float = OBJ_MIN_INTO,
                       cam_min_into: float = CAM_MIN_INTO):
    """Half-width of the object volume at depth ``y``: ``base·(y − cam_min_into)/(min_into − cam_min_into)``
    (1.05·(y + 6)/4 with the defaults)."""
    return base * (y - cam_min_into) / (min_into - cam_min_into)


def point_in_block(rng: np.random.RandomState, min_base: float, max_base: float, min_into: float,
                   max_into: float) -> np.ndarray:
    """(x, y, z) with x, z ∈ [min_base, max_base], y ∈ [min_into, max_into] (drawn x, y, z)."""
    x = uniform(rng, min_base, max_base)
    y = uniform(rng, min_into, max_into)
    z = uniform(rng, min_base, max_base)
    return np.array((x, y, z))


def point_in_frustum(rng: np.random.RandomState) -> np.ndarray:
    """(x, y, z) in the object frustum: y ∈ [−2, 5], then x, z within ±frustum_half_width(y)."""
    y = uniform(rng, OBJ_MIN_INTO, OBJ_MAX_INTO)
    lo = OBJ_MIN_BASE * (y - CAM_MIN_INTO) / (OBJ_MIN_INTO - CAM_MIN_INTO)
    hi = OBJ_MAX_BASE * (y - CAM_MIN_INTO) / (OBJ_MIN_INTO - CAM_MIN_INTO)
    x = uniform(rng, lo, hi)
    z = uniform(rng, lo, hi)
    return np.array((x, y, z))


def point_on_sphere(rng: np.random.RandomState, radius: float) -> np.ndarray:
    v = np.array([rng.normal(0, 1), rng.normal(0, 1), rng.normal(0, 1)])
    return radius * v / np.sqrt((v * v).sum())


def step_towards(current: np.ndarray, fresh: np.ndarray, max_delta: np.ndarray) -> np.ndarray:
    """The next control point: ``fresh`` (a new random point of the volume), with the displacement
    from ``current`` clipped per axis to ``|max_delta|``. As in the original, only a positive
    overshoot is clipped (a large negative displacement is kept) — it shapes the motion statistics."""
    limit = np.abs(max_delta)
    delta = fresh - current
    for i in range(3):
        if delta[i] > limit[i]:
            delta[i] = np.sign(delta[i]) * limit[i]
    return current + delta


def fit_poly(points: np.ndarray, degree: int = DEGREE) -> list[list[float]]:
    """Coefficients (lowest order first, one row per power, 3 columns) of the polynomial through
    ``points`` (``degree+1`` × 3) at t = 0, 1/degree, …, 1 (t = 0 only for degree 0)."""
    ts = np.array([i / degree for i in range(degree + 1)]) if degree else np.array([0.0])
    return npoly.polyfit(ts, points, deg=degree).astype(float).tolist()


def min_path_distance(path_a, path_b, robust: bool = False) -> float:
    """min over t ∈ [0, 1] of ‖a(t) − b(t)‖ by SciPy's bounded scalar minimisation.

    ``robust=False`` (the original): one bounded search over [0, 1]; it is local, so for paths that
    approach each other twice it can return the shallower of the two minima and accept paths that
    come closer than the tolerance. ``robust=True``: the search is started in the bracket around the
    best of 33 evenly spaced times, which finds the global minimum of these degree-4 paths."""
    diff = np.asarray(path_a, dtype=float) - np.asarray(path_b, dtype=float)

    def dist(t):
        return np.linalg.norm(npoly.polyval(t, diff))

    bounds = (0.0, 1.0)
    if robust:
        grid = np.linspace(0.0, 1.0, 33)
        best = int(np.argmin(np.linalg.norm(np.asarray(npoly.polyval(grid, diff)), axis=0)))
        bounds = (grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    res = optimize.minimize_scalar(dist, bounds=bounds, method="bounded")
    return float(res.fun)


def path_is_clear(previous: Sequence, path, tol: float = PATH_MIN_DIST, robust: bool = False) -> bool:
    return all(min_path_distance(p, path, robust) >= tol for p in previous)


# ---------------------------------------------------------------- inputs

def list_models(models_root: str | os.PathLike) -> list[str]:
    """``<synset>/<model>`` of every ShapeNet model that has ``models/model_normalized.obj``
    (entries with ``.json`` in their name, e.g. taxonomy.json, are skipped)."""
    root = Path(models_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--models {root}: not a folder (expected the ShapeNetCore root <synset>/<model>/...)")
    out = []
    for synset in sorted(os.listdir(root)):
        if ".json" in synset or not (root / synset).is_dir():
            continue
        for model in sorted(os.listdir(root / synset)):
            if (root / synset / model / MODEL_FILE).is_file():
                out.append(f"{synset}/{model}")
    return out


def list_images(texture_root: str | os.PathLike, kind: str) -> list[str]:
    """``<kind>/<class>/<file>`` of every file under ``texture_root/<kind>`` (kind: skybox or texture)."""
    root = Path(texture_root) / kind
    if not root.is_dir():
        raise FileNotFoundError(f"--texture {texture_root}: no {kind}/ folder (expected {kind}/<class>/<image>)")
    return [f"{kind}/{cls}/{f}" for cls in sorted(os.listdir(root)) if (root / cls).is_dir()
            for f in sorted(os.listdir(root / cls))]


def has_texture_map(models_root: str | os.PathLike, model: str) -> bool:
    """Whether the model's material file maps a diffuse texture (``map_Kd``)."""
    mtl = Path(models_root) / model / "models" / "model_normalized.mtl"
    try:
        with open(mtl, "r", errors="replace") as f:
            return any("map_Kd" in line for line in f)
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- scene generator

@dataclass
class SceneGenerator:
    """Draws scene dicts. The three samplers are created (permuted) in the order objects, skyboxes,
    textures, then every scene draws camera → objects → lights → skybox."""
    models_root: str
    models: list[str]
    skyboxes: list[str]
    textures: list[str]
    seed: int = 0
    robust_distance: bool = False  # see min_path_distance; False reproduces the original
    rng: np.random.RandomState = field(init=False)
    last_trials: list[int] = field(init=False, default_factory=list)  # redraws per object of the last scene

    def __post_init__(self) -> None:
        self.rng = np.random.RandomState(self.seed)
        self.obj_sampler = Sampler(self.models, self.rng)
        self.sky_sampler = Sampler(self.skyboxes, self.rng)
        self.tex_sampler = Sampler(self.textures, self.rng)
        self._mapped: dict[str, bool] = {}

    def _static_walk(self, n_tracks: int, first, step) -> list[np.ndarray]:
        """Control points for ``n_tracks`` tracks with the shared static/moving state machine.

        ``first()`` → list of start points; ``step(prev)`` → list of next points (moving)."""
        rng = self.rng
        pts = [np.zeros((DEGREE + 1, 3)) for _ in range(n_tracks)]
        for track, p in zip(pts, first()):
            track[0] = p
        is_static = rng.rand() < ENTER_STATIC_PROB
        for i in range(1, DEGREE + 1):
            if is_static:
                for track in pts:
                    track[i] = track[i - 1]
                if rng.rand() > CONTI_STATIC_PROB:
                    is_static = False
            else:
                for track, p in zip(pts, step([t[i - 1] for t in pts])):
                    track[i] = p
                if rng.rand() < ENTER_STATIC_PROB:
                    is_static = True
        return pts

    def camera_runner(self) -> dict:
        rng = self.rng
        fov = float(uniform(rng, CAM_MIN_FOV, CAM_MAX_FOV))
        max_tsl = CAM_MAX_TSL_PER_FRAME * N_FRAMES / DEGREE
        max_ltl = CAM_LOOK_AT_MAX_SHIFT * N_FRAMES / DEGREE

        def first():
            return [point_in_block(rng, CAM_MIN_BASE, CAM_MAX_BASE, CAM_MIN_INTO, CAM_MAX_INTO),
                    point_in_block(rng, LKA_MIN_BASE, LKA_MAX_BASE, LKA_MIN_INTO, LKA_MAX_INTO)]

        def step(prev):
            tsl = rng.normal(0, max_tsl, 3)
            ltl = rng.normal(0, max_ltl, 3)
            loc = step_towards(prev[0], point_in_block(rng, CAM_MIN_BASE, CAM_MAX_BASE, CAM_MIN_INTO, CAM_MAX_INTO), tsl)
            lok = step_towards(prev[1], point_in_block(rng, LKA_MIN_BASE, LKA_MAX_BASE, LKA_MIN_INTO, LKA_MAX_INTO), ltl)
            return [loc, lok]

        loc_pts, lok_pts = self._static_walk(2, first, step)
        return {"module": "camera.CameraTrajectoryRunner",
                "config": {"intrinsics": {"resolution_x": RES_X, "resolution_y": RES_Y, "fov": fov},
                           "cam_poses": {"location_poly": fit_poly(loc_pts), "look_at_poly": fit_poly(lok_pts)}}}

    def object_runner(self) -> tuple[dict, list[list[float]]]:
        """One object runner and its location polynomial."""
        rng = self.rng
        model = self.obj_sampler.next()
        if model not in self._mapped:
            self._mapped[model] = has_texture_map(self.models_root, model)
        replace_prob = MAPPED_REPLACE_PROB if self._mapped[model] else UNMAPPED_REPLACE_PROB
        replace = rng.rand() < replace_prob
        config = {"path": f"<args:0>/{model}/models/model_normalized.obj",
                  "seed": int(rng.randint(0, 2**31 + 1))}
        if replace:
            config["texture"] = f"<args:1>/{self.tex_sampler.next()}"

        max_tsl = OBJ_MAX_TSL_PER_FRAME * N_FRAMES / DEGREE
        max_rot = OBJ_MAX_ROT_PER_FRAME * N_FRAMES / DEGREE
        scale_lo, scale_hi = MIN_SCALE_CHANGE ** (1 / DEGREE), MAX_SCALE_CHANGE ** (1 / DEGREE)

        def first():
            return [point_in_frustum(rng), rng.rand(3) * np.pi * 2, uniform(rng, OBJ_MIN_SCALE, OBJ_MAX_SCALE, 3)]

        def step(prev):
            tsl = rng.normal(0, max_tsl, 3)
            loc = step_towards(prev[0], point_in_frustum(rng), tsl)
            rot = prev[1] + rng.normal(0, max_rot, 3)
            scl = prev[2] * uniform(rng, scale_lo, scale_hi, 3)
            return [loc, rot, scl]

        loc_pts, rot_pts, scl_pts = self._static_walk(3, first, step)
        loc_poly = fit_poly(loc_pts)
        config["poses"] = {"location_poly": loc_poly, "rotation_poly": fit_poly(rot_pts),
                           "scale_poly": fit_poly(scl_pts)}
        return {"module": "object.ObjectTrajectoryRunner", "config": config}, loc_poly

    def light_runner(self, name: str) -> dict:
        rng = self.rng
        energy = int(rng.randint(LIGHT_MIN_STR, LIGHT_MAX_STR + 1))
        color = LIGHT_BASE_COLOR + uniform(rng, 0, LIGHT_MOD_COLOR, 3)
        color = color / color.max()
        loc_pts = np.zeros((LIGHT_DEGREE + 1, 3))
        rot_pts = np.zeros((LIGHT_DEGREE + 1, 3))
        for i in range(LIGHT_DEGREE + 1):
            loc_pts[i] = point_on_sphere(rng, LIGHT_RADIUS)
            rot_pts[i] = rng.rand(3) * 3.14 * 2  # 3.14, not π, as in the original
        return {"module": "lighting.LightTrajectoryRunner",
                "config": {"name": name,
                           "light": {"type": "POINT", "energy": energy, "color": color.astype(float).tolist()},
                           "poses": {"location_poly": fit_poly(loc_pts, LIGHT_DEGREE),
                                     "rotation_poly": fit_poly(rot_pts, LIGHT_DEGREE)}}}

    def skybox(self) -> dict:
        sky = self.sky_sampler.next()
        return {"module": "loader.SkyBoxLoader",
                "config": {"path": f"<args:1>/{sky}", "location": list(SKYBOX_LOCATION),
                           "rotation": list(SKYBOX_ROTATION),
                           "strength": float(uniform(self.rng, SKY_LIGHT_MIN, SKY_LIGHT_MAX))}}

    def scene(self, text_id: str) -> dict:
        """The full config of one video (``text_id`` names its output folder)."""
        d = {"version": 2,
             "setup": {"blender_install_path": "/home/<env:USER>/blender/", "pip": []},
             "global": {"all": {"output_dir": f"<args:2>/{text_id}"}},
             "modules": [{"module": "main.Initializer", "config": {}}]}
        runner = {"module": "composite.VOSTrajRunner", "config": {"n_frames": N_FRAMES}}
        runner["config"]["camera_runner"] = self.camera_runner()

        n_objects = int(self.rng.randint(MIN_NUM_OBJ, MAX_NUM_OBJ + 1))
        objects, paths, self.last_trials = [], [], []
        for _ in range(n_objects):
            obj, path = self.object_runner()
            trials = 0
            # greedy: redraw (the same model, offered again) while the path comes too close to an earlier one
            while not path_is_clear(paths, path, robust=self.robust_distance) and trials < PATH_MAX_TRIALS:
                trials += 1
                self.obj_sampler.step_back()
                obj, path = self.object_runner()
            objects.append(obj)
            paths.append(path)
            self.last_trials.append(trials)
        runner["config"]["object_runners"] = objects

        n_lights = int(self.rng.randint(MIN_NUM_LIGHTS, MAX_NUM_LIGHTS + 1))
        runner["config"]["light_runners"] = [self.light_runner(f"light_{i:02d}") for i in range(n_lights)]

        d["modules"].append(runner)
        d["modules"].append(self.skybox())
        # renderers last: the renderer runs the modules in this order
        d["modules"].append({"module": "renderer.SimRgbRenderer",
                             "config": {"resolution_x": RES_X, "resolution_y": RES_Y, "output_key": "colors"}})
        d["modules"].append({"module": "renderer.SegMapPngRenderer",
                             "config": {"resolution_x": RES_X, "resolution_y": RES_Y, "map_by": "instance"}})
        d["modules"].append({"module": "writer.RGBSegWriter", "config": {}})
        return d


def dump_scene(scene: dict) -> str:
    """YAML text as the original writes it (``yaml.dump(..., default_flow_style=True)``, keys sorted)."""
    return yaml.dump(scene, default_flow_style=True)


def generate(models_root: str, texture_root: str, output: str, num_samples: int = 1, prefix: str = "",
             seed: int = 0, quiet: bool = False, robust_distance: bool = False) -> list[Path]:
    """Write ``<output>/<prefix><%05d>.yaml`` for ``num_samples`` scenes; returns the paths."""
    models = list_models(models_root)
    skyboxes = list_images(texture_root, "skybox")
    textures = list_images(texture_root, "texture")
    for what, items, where in (("models", models, f"{models_root}/<synset>/<model>/{MODEL_FILE.as_posix()}"),
                               ("skybox images", skyboxes, f"{texture_root}/skybox/<class>/"),
                               ("texture images", textures, f"{texture_root}/texture/<class>/")):
        if not items:
            raise FileNotFoundError(f"no {what} found under {where}")
    if not quiet:
        print("Number of objects: ", len(models))
        print("Number of sky box textures: ", len(skyboxes))
        print("Number of normal textures: ", len(textures))
    gen = SceneGenerator(str(models_root), models, skyboxes, textures, seed, robust_distance)
    out_root = Path(output)
    out_root.mkdir(parents=True, exist_ok=True)
    written = []
    indices = range(num_samples)
    if not quiet:
        from progressbar import progressbar
        indices = progressbar(indices)
    for i in indices:
        text_id = f"{prefix}{i:05d}"
        path = out_root / f"{text_id}.yaml"
        path.write_text(dump_scene(gen.scene(text_id)))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate BL30K-style Blender scene configurations (YAML) with random "
                                "smooth trajectories for the camera, ShapeNet objects and lights.")
    p.add_argument("--models", required=True, help="ShapeNetCore root (<synset>/<model>/models/model_normalized.obj)")
    p.add_argument("--texture", required=True, help="image root with skybox/<class>/<img> and texture/<class>/<img>")
    p.add_argument("--prefix", default="", help="file name prefix (default '')")
    p.add_argument("--num_samples", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give identical files (default 0)")
    p.add_argument("--robust_distance", action="store_true",
                   help="find the true closest approach of two object paths (the original's local search can "
                        "miss it and let paths come closer than 0.75); changes the output for a given seed")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("output", help="output folder for the YAML files")
    args = p.parse_args(argv)
    try:
        generate(args.models, args.texture, args.output, args.num_samples, args.prefix, args.seed, args.quiet,
                 args.robust_distance)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
