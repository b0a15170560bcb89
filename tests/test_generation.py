"""BL30K scene generation (generation/blender/*) on a tiny fake ShapeNet + texture tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.polynomial.polynomial as npoly
import pytest
import yaml

from generation.blender import clean_data, generate_yaml as gy, resize_texture

ROOT = Path(__file__).resolve().parents[1]
BLENDER = ROOT / "generation" / "blender"

MODULE_ORDER = ["main.Initializer", "composite.VOSTrajRunner", "loader.SkyBoxLoader", "renderer.SimRgbRenderer",
                "renderer.SegMapPngRenderer", "writer.RGBSegWriter"]
CONTROL_T = np.linspace(0, 1, gy.DEGREE + 1)
DENSE_T = np.linspace(0, 1, 401)


def _lebesgue_constant() -> float:
    """max_t Σ_k |ℓ_k(t)| for the 5 equispaced nodes: how far the interpolating polynomial can
    overshoot the range of its control points (relative to the range's half-width)."""
    total = np.zeros_like(DENSE_T)
    for k in range(len(CONTROL_T)):
        others = np.delete(CONTROL_T, k)
        total += np.abs(np.prod([(DENSE_T - o) / (CONTROL_T[k] - o) for o in others], axis=0))
    return float(total.max())


LEBESGUE = _lebesgue_constant()


@pytest.fixture
def tree(tmp_path):
    models = tmp_path / "ShapeNet"
    for synset, ids in (("02691156", ["a1", "a2", "a3", "a4"]), ("03001627", ["c1", "c2", "c3"])):
        for mid in ids:
            d = models / synset / mid / "models"
            d.mkdir(parents=True)
            (d / "model_normalized.obj").write_text("v 0 0 0\n")
            if mid in ("a1", "c2"):  # textured models: replaced only half of the time
                (d / "model_normalized.mtl").write_text("newmtl m\nmap_Kd texture.jpg\n")
    (models / "02691156" / "broken" / "models").mkdir(parents=True)  # no .obj: skipped
    (models / "taxonomy.json").write_text("[]")
    tex = tmp_path / "textures"
    for kind, classes in (("skybox", ["city", "sky"]), ("texture", ["wood", "metal", "fur"])):
        for cls in classes:
            (tex / kind / cls).mkdir(parents=True)
            for i in range(2):
                (tex / kind / cls / f"{i}.jpg").write_bytes(b"x")
    return models, tex


def _generate(tree, out: Path, seed: int, n: int = 6) -> list[Path]:
    models, tex = tree
    return gy.generate(str(models), str(tex), str(out), num_samples=n, prefix="t", seed=seed, quiet=True)


def _values(coeffs, t) -> np.ndarray:
    return np.asarray(npoly.polyval(t, np.asarray(coeffs, dtype=float))).T  # len(t) × 3 (or 3 for scalar t)


def test_inputs_are_listed_sorted_and_filtered(tree):
    models, tex = tree
    assert gy.list_models(models) == ["02691156/a1", "02691156/a2", "02691156/a3", "02691156/a4",
                                      "03001627/c1", "03001627/c2", "03001627/c3"]
    assert gy.list_images(tex, "skybox") == ["skybox/city/0.jpg", "skybox/city/1.jpg", "skybox/sky/0.jpg",
                                             "skybox/sky/1.jpg"]
    assert gy.has_texture_map(models, "02691156/a1") and not gy.has_texture_map(models, "02691156/a2")
    with pytest.raises(FileNotFoundError, match="--models"):
        gy.list_models(models / "nope")


def test_yaml_schema_and_ranges(tree, tmp_path):
    models, tex = tree
    paths = _generate(tree, tmp_path / "out", seed=3)
    assert [p.name for p in paths] == [f"t{i:05d}.yaml" for i in range(6)]
    n_objects = set()
    for path in paths:
        text = path.read_text()
        d = yaml.safe_load(text)
        assert list(d) == ["global", "modules", "setup", "version"]  # yaml.dump sorts keys, as the original
        assert d["version"] == 2
        assert d["setup"] == {"blender_install_path": "/home/<env:USER>/blender/", "pip": []}
        assert d["global"] == {"all": {"output_dir": f"<args:2>/{path.stem}"}}
        assert [m["module"] for m in d["modules"]] == MODULE_ORDER
        assert all(list(m) == ["config", "module"] for m in d["modules"])
        init, traj, sky, rgb, seg, writer = (m["config"] for m in d["modules"])
        assert init == {} and writer == {}
        assert rgb == {"output_key": "colors", "resolution_x": 768, "resolution_y": 512}
        assert seg == {"map_by": "instance", "resolution_x": 768, "resolution_y": 512}

        assert list(traj) == ["camera_runner", "light_runners", "n_frames", "object_runners"]
        assert traj["n_frames"] == 160
        cam = traj["camera_runner"]
        assert cam["module"] == "camera.CameraTrajectoryRunner"
        intr = cam["config"]["intrinsics"]
        assert (intr["resolution_x"], intr["resolution_y"]) == (768, 512) and 0.7 <= intr["fov"] <= 0.8
        assert np.shape(cam["config"]["cam_poses"]["location_poly"]) == (5, 3)
        assert np.shape(cam["config"]["cam_poses"]["look_at_poly"]) == (5, 3)

        objs = traj["object_runners"]
        assert 3 <= len(objs) <= 5
        n_objects.add(len(objs))
        for o in objs:
            assert o["module"] == "object.ObjectTrajectoryRunner"
            c = o["config"]
            assert set(c) <= {"path", "seed", "texture", "poses"} and {"path", "seed", "poses"} <= set(c)
            assert c["path"].startswith("<args:0>/") and c["path"].endswith("/models/model_normalized.obj")
            assert (models / c["path"][len("<args:0>/"):]).is_file()
            assert 0 <= c["seed"] <= 2**31
            if "texture" in c:
                assert c["texture"].startswith("<args:1>/texture/")
                assert (tex / c["texture"][len("<args:1>/"):]).is_file()
            else:  # untextured models always get a texture
                assert gy.has_texture_map(models, c["path"][len("<args:0>/"):-len("/models/model_normalized.obj")])
            assert {k: np.shape(v) for k, v in c["poses"].items()} == {
                "location_poly": (5, 3), "rotation_poly": (5, 3), "scale_poly": (5, 3)}

        lights = traj["light_runners"]
        assert 1 <= len(lights) <= 3
        for i, light in enumerate(lights):
            c = light["config"]
            assert light["module"] == "lighting.LightTrajectoryRunner" and c["name"] == f"light_{i:02d}"
            assert c["light"]["type"] == "POINT" and 1000 <= c["light"]["energy"] <= 15000
            color = np.array(c["light"]["color"])
            assert color.max() == 1.0 and color.min() >= 0.5
            assert np.shape(c["poses"]["location_poly"]) == (1, 3)
            assert np.linalg.norm(c["poses"]["location_poly"][0]) == pytest.approx(11)
            assert all(0 <= r <= 6.28 for r in c["poses"]["rotation_poly"][0])

        assert sky["path"].startswith("<args:1>/skybox/") and (tex / sky["path"][len("<args:1>/"):]).is_file()
        assert sky["location"] == [0, 12, 0] and sky["rotation"] == [pytest.approx(np.pi / 2), 0, 0]
        assert 0.1 <= sky["strength"] <= 1.0
    assert len(n_objects) > 1, "the object count varies between scenes"


def _inside(points: np.ndarray, lo, hi, eps: float = 1e-9) -> bool:
    return bool(np.all(points >= np.asarray(lo) - eps) and np.all(points <= np.asarray(hi) + eps))


def _within_overshoot(curve: np.ndarray, lo, hi) -> bool:
    """Inside the box scaled about its centre by the Lebesgue constant (the most an interpolating
    polynomial can leave the box that holds its control points)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    return bool(np.all(np.abs(curve - centre) <= LEBESGUE * half + 1e-9))


def test_trajectories_stay_in_their_volumes(tree, tmp_path):
    cam_lo, cam_hi = (-0.3, -6, -0.3), (0.3, -5, 0.3)
    lka_lo, lka_hi = (-0.5, 3, -0.5), (0.5, 4, 0.5)
    wide = gy.frustum_half_width(gy.OBJ_MAX_INTO)  # 1.05 · 11 / 4
    obj_lo, obj_hi = (-wide, -2, -wide), (wide, 5, wide)
    for path in _generate(tree, tmp_path / "out", seed=11, n=8):
        traj = yaml.safe_load(path.read_text())["modules"][1]["config"]
        poses = traj["camera_runner"]["config"]["cam_poses"]
        for poly, lo, hi in ((poses["location_poly"], cam_lo, cam_hi), (poses["look_at_poly"], lka_lo, lka_hi)):
            ctrl = _values(poly, CONTROL_T)
            assert _inside(ctrl, lo, hi), "camera control points are inside their block"
            assert _within_overshoot(_values(poly, DENSE_T), lo, hi)
        for o in traj["object_runners"]:
            p = o["config"]["poses"]
            ctrl = _values(p["location_poly"], CONTROL_T)
            assert _inside(ctrl, obj_lo, obj_hi)
            # the start point is drawn inside the frustum itself; every control point is in front of the camera
            assert abs(ctrl[0, 0]) <= gy.frustum_half_width(ctrl[0, 1]) + 1e-9
            assert abs(ctrl[0, 2]) <= gy.frustum_half_width(ctrl[0, 1]) + 1e-9
            assert np.all(ctrl[:, 1] > cam_hi[1])
            assert _within_overshoot(_values(p["location_poly"], DENSE_T), obj_lo, obj_hi)
            scale = _values(p["scale_poly"], CONTROL_T)
            assert _inside(scale[0], [1.25] * 3, [3.0] * 3)
            ratio = scale / scale[0]
            assert np.all(ratio >= 0.8 - 1e-9) and np.all(ratio <= 1.25 + 1e-9)
            assert _inside(_values(p["rotation_poly"], 0.0), [0] * 3, [2 * np.pi] * 3)


def _scenes(tree, seed: int, robust: bool, n: int = 10):
    models, tex = tree
    gen = gy.SceneGenerator(str(models), gy.list_models(models), gy.list_images(tex, "skybox"),
                            gy.list_images(tex, "texture"), seed=seed, robust_distance=robust)
    for i in range(n):
        scene = gen.scene(f"{i:05d}")
        objs = scene["modules"][1]["config"]["object_runners"]
        yield [o["config"]["poses"]["location_poly"] for o in objs], list(gen.last_trials)


@pytest.mark.parametrize("robust", [False, True])
def test_object_paths_keep_apart_unless_retries_run_out(tree, robust):
    checked = 0
    for locs, trials in _scenes(tree, 5, robust):
        for j, n_trials in enumerate(trials):
            assert 0 <= n_trials <= gy.PATH_MAX_TRIALS
            if n_trials == gy.PATH_MAX_TRIALS:
                continue  # accepted anyway after 50 redraws, as the original does
            for k in range(j):
                # the criterion the generator applies (the original's local search by default)
                assert gy.min_path_distance(locs[k], locs[j], robust) >= gy.PATH_MIN_DIST
                if robust:  # ... which then is the true closest approach
                    dense = np.linalg.norm(_values(locs[k], DENSE_T) - _values(locs[j], DENSE_T), axis=1).min()
                    assert dense >= gy.PATH_MIN_DIST - 1e-3
                checked += 1
    assert checked > 10


def test_min_path_distance_is_the_closest_approach():
    a = gy.fit_poly(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]], float))
    b = gy.fit_poly(np.array([[4, 1, 0], [3, 1, 0], [2, 1, 0], [1, 1, 0], [0, 1, 0]], float))
    assert gy.min_path_distance(a, b) == pytest.approx(1.0, abs=1e-4)  # they cross at t = 0.5, 1 apart
    assert not gy.path_is_clear([a], b, tol=1.5) and gy.path_is_clear([a], b, tol=0.75)
    # two close approaches (t = 0.1: 0.3 apart, t = 0.8: 0.5 apart): the robust search finds the closer one
    ts = np.linspace(0, 1, 5)
    gap = 0.3 + 40 * (ts - 0.1) ** 2 * (ts - 0.8) ** 2  # ≥ 0.3, minima near 0.1 and 0.8
    c = gy.fit_poly(np.stack([ts, gap, np.zeros(5)], 1))
    d = gy.fit_poly(np.stack([ts, np.zeros(5), np.zeros(5)], 1))
    true_min = np.abs(_values(c, DENSE_T)[:, 1]).min()
    assert gy.min_path_distance(c, d, robust=True) == pytest.approx(true_min, abs=1e-4)
    assert gy.min_path_distance(c, d, robust=False) >= true_min - 1e-9


def test_same_seed_same_bytes_other_seed_differs(tree, tmp_path):
    first = [p.read_bytes() for p in _generate(tree, tmp_path / "a", seed=7, n=3)]
    again = [p.read_bytes() for p in _generate(tree, tmp_path / "b", seed=7, n=3)]
    other = [p.read_bytes() for p in _generate(tree, tmp_path / "c", seed=8, n=3)]
    assert first == again
    assert all(x != y for x, y in zip(first, other))
    assert len(set(first)) == 3, "scenes within a run differ"


def test_sampler_walks_permutations_and_steps_back():
    s = gy.Sampler(["a", "b", "c"], np.random.RandomState(0))
    draws = [s.next() for _ in range(9)]
    for i in range(0, 9, 3):
        assert sorted(draws[i:i + 3]) == ["a", "b", "c"]
    x = s.next()
    s.step_back()
    assert s.next() == x


def test_step_towards_clips_only_positive_overshoot():
    cur = np.zeros(3)
    out = gy.step_towards(cur, np.array([2.0, -2.0, 0.1]), np.array([0.5, -0.5, 0.5]))
    np.testing.assert_allclose(out, [0.5, -2.0, 0.1])


def test_keyword_lists():
    expected = {"skybox.json": ("skybox", 32), "texture.json": ("texture", 15), "texture_2.json": ("texture", 5)}
    words = {}
    for name, (outdir, n) in expected.items():
        recs = json.loads((BLENDER / name).read_text())["Records"]
        assert len(recs) == n
        for r in recs:
            assert r["limit"] == 300 and r["usage_rights"] == "labeled-for-nocommercial-reuse"
            assert r["print_urls"] is True and r["output_directory"] == outdir
        words[name] = [r["keywords"] for r in recs]
    assert "living room" in words["skybox.json"] and "kitchen" in words["skybox.json"]
    assert all(w.endswith(" texture") for w in words["texture.json"] + words["texture_2.json"])
    assert words["texture_2.json"] == [f"{w} texture" for w in ("stone", "fabric", "pebble", "sand", "beach")]


def test_resize_texture(tmp_path):
    src = tmp_path / "in" / "wood"
    src.mkdir(parents=True)
    img = np.zeros((300, 700, 3), np.uint8)
    img[:, :350] = 255  # left half white
    cv2.imwrite(str(src / "a.png"), img)
    (src / "notes.txt").write_text("not an image")
    assert resize_texture.resize_all(tmp_path / "in", tmp_path / "out", processes=1) == 1
    out = cv2.imread(str(tmp_path / "out" / "wood" / "a.png"))
    assert out.shape == (512, 512, 3)
    # 700×300 → 1195×512, top-left crop: the white half covers columns < ~597, so all of the crop
    assert out[:, :500].min() == 255


def test_clean_data_moves_complete_renders(tmp_path):
    renders, out, yamls = tmp_path / "renders", tmp_path / "out", tmp_path / "yaml"
    for name, n in (("a0000001", 160), ("a0000002", 159)):
        seg = renders / name / "segmentation"
        seg.mkdir(parents=True)
        for i in range(n):
            (seg / f"{i}.png").write_bytes(b"")
        (yamls / "yaml_a00").mkdir(parents=True, exist_ok=True)
        (yamls / "yaml_a00" / f"{name}.yaml").write_text(name)
    assert clean_data.clean(renders, out, yamls) == (1, 1)
    assert (out / "a0000001" / "a0000001.yaml").read_text() == "a0000001"
    assert (renders / "a0000002").is_dir() and not (renders / "a0000001").exists()
    assert clean_data.clean(renders, out, yamls) == (1, 0)


@pytest.mark.parametrize("script", ["generate_yaml.py", "resize_texture.py", "clean_data.py"])
def test_generation_scripts_have_help(script):
    r = subprocess.run([sys.executable, str(BLENDER / script), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr


def test_generate_yaml_cli(tree, tmp_path):
    models, tex = tree
    r = subprocess.run([sys.executable, str(BLENDER / "generate_yaml.py"), "--models", str(models), "--texture",
                        str(tex), "--num_samples", "2", "--seed", "1", "--prefix", "z", "--quiet",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "o")) == ["z00000.yaml", "z00001.yaml"]
    r = subprocess.run([sys.executable, str(BLENDER / "generate_yaml.py"), "--models", str(tmp_path / "none"),
                        "--texture", str(tex), str(tmp_path / "o2")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
