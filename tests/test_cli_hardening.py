"""Bad input as a user meets it, across every script: one ``error: --flag VALUE: …`` line, exit 2, no
traceback, and no input file touched.

Each case runs the script as a subprocess (the interpreter of this test, cwd = the repository) on small
generated data. The fast cases fail at argument validation, before any network is loaded (the model
files are placeholders there); the end-to-end cases with seeded weights are marked ``slow``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from util import cli

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Inputs of every case: frames (JPEG and PNG), a first-frame mask, videos, DAVIS-layout roots
    (intact, a missing JPEG, a missing annotation, a broken scribble file), placeholder checkpoints,
    a regular file to put outputs under, and a folder named like an mp4."""
    import cv2

    from dataset.synthetic import generate_davis, make_clip, write_image_folder, write_video
    from util.palette import save_mask_png

    d = tmp_path_factory.mktemp("cli")
    clip = make_clip(4, 64, 48, 1, seed=0)
    write_image_folder(d / "frames_jpg", clip.frames)
    (d / "frames_png").mkdir()
    for t, f in enumerate(clip.frames):
        cv2.imwrite(str(d / "frames_png" / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    save_mask_png(d / "masks" / "00000.png", clip.labels[0])
    write_video(d / "clip.mp4", clip.frames)
    (d / "long").mkdir()
    cv2.imwrite(str(d / "long" / "00000.jpg"), np.full((10, 10000, 3), 128, np.uint8))
    save_mask_png(d / "long_mask.png", np.pad(np.ones((10, 20), np.uint8), ((0, 0), (0, 9980))))

    generate_davis(d / "davis", num_sequences=1, num_frames=4, size=(64, 48), num_objects=(1,), seed=0)
    for name in ("davis_nojpeg", "davis_noann", "davis_badjson"):
        shutil.copytree(d / "davis", d / name)
    (d / "davis_nojpeg" / "JPEGImages" / "480p" / "synth-000" / "00002.jpg").unlink()
    (d / "davis_noann" / "Annotations" / "480p" / "synth-000" / "00002.png").unlink()
    (d / "davis_badjson" / "Scribbles" / "synth-000" / "001.json").write_text('{"scribbles": [')

    (d / "w").mkdir()
    for name in ("propagation_model", "fusion", "s2m", "fbrs"):
        (d / "w" / f"{name}.pth").write_bytes(b"placeholder: validation fails before any load")
    (d / "afile.txt").write_text("a regular file")
    (d / "dir.mp4").mkdir()
    return d


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_script(script: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS="1")
    env.pop(cli.DEBUG_ENV, None)
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ----------------------------------------------------------------------------------------------- cases
# (script, arguments with {d} = the data folder, the flag the error line must name)
P = ["--mask", "{d}/masks/00000.png", "--model", "{d}/w/propagation_model.pth", "--quiet"]
PI = ["--images", "{d}/frames_jpg", *P]
E = ["--davis", "{d}/davis", "--model", "{d}/w/propagation_model.pth", "--num_workers", "0"]
G = ["--dataset", "DAVIS", "--davis_root", "{d}/davis", "--model", "{d}/w/propagation_model.pth",
     "--separation", "2", "--mem_freq", "1"]
C = ["--src_image", "{d}/frames_jpg/00000.jpg", "--tar_image", "{d}/frames_jpg/00001.jpg",
     "--model", "{d}/w/propagation_model.pth"]
T = ["--load_prop", "{d}/w/propagation_model.pth", "--davis_root", "{d}/davis", "--num_workers", "0"]
I = ["--prop_model", "{d}/w/propagation_model.pth", "--fusion_model", "{d}/w/fusion.pth",
     "--s2m_model", "{d}/w/s2m.pth", "--no_progress"]
GUI = ["--prop_model", "{d}/w/propagation_model.pth", "--fusion_model", "{d}/w/fusion.pth",
       "--s2m_model", "{d}/w/s2m.pth", "--fbrs_model", "{d}/w/fbrs.pth", "--images", "{d}/frames_jpg"]

CASES = {
    # propagate.py: never write over the user's frames or mask; outputs checked before any work
    "prop-output-is-png-frames": ("propagate.py", ["--images", "{d}/frames_png", *P, "--output", "{d}/frames_png"], "--output"),
    "prop-output-inside-frames": ("propagate.py", [*PI, "--output", "{d}/frames_jpg/masks"], "--output"),
    "prop-output-holds-mask": ("propagate.py", [*PI, "--output", "{d}/masks"], "--output"),
    "prop-output-is-a-file": ("propagate.py", [*PI, "--output", "{d}/afile.txt"], "--output"),
    "prop-output-under-a-file": ("propagate.py", [*PI, "--output", "{d}/afile.txt/out"], "--output"),
    "prop-overlay-is-the-video": ("propagate.py", ["--video", "{d}/clip.mp4", *P, "--output", "{d}/o1",
                                                   "--overlay", "{d}/clip.mp4"], "--overlay"),
    "prop-overlay-under-a-file": ("propagate.py", [*PI, "--output", "{d}/o1", "--overlay", "{d}/afile.txt/o.mp4"], "--overlay"),
    "prop-overlay-is-a-folder": ("propagate.py", [*PI, "--output", "{d}/o1", "--overlay", "{d}/dir.mp4"], "--overlay"),
    "prop-overlay-not-mp4": ("propagate.py", [*PI, "--output", "{d}/o1", "--overlay", "{d}/o.avi"], "--overlay"),
    "prop-top_k-negative": ("propagate.py", [*PI, "--output", "{d}/o1", "--top_k", "-5"], "--top_k"),
    "prop-top_k-zero": ("propagate.py", [*PI, "--output", "{d}/o1", "--top_k", "0"], "--top_k"),
    "prop-top_k-text": ("propagate.py", [*PI, "--output", "{d}/o1", "--top_k", "abc"], "--top_k"),
    "prop-mem_freq-zero": ("propagate.py", [*PI, "--output", "{d}/o1", "--mem_freq", "0"], "--mem_freq"),
    "prop-resolution-zero": ("propagate.py", [*PI, "--output", "{d}/o1", "--resolution", "0"], "--resolution"),
    "prop-resolution-negative": ("propagate.py", [*PI, "--output", "{d}/o1", "--resolution", "-7"], "--resolution"),
    "prop-device-gpu0": ("propagate.py", [*PI, "--output", "{d}/o1", "--device", "gpu0"], "--device"),
    "prop-device-cuda-without-gpu": ("propagate.py", [*PI, "--output", "{d}/o1", "--device", "cuda"], "--device"),
    "prop-images-missing": ("propagate.py", ["--images", "{d}/nothing", *P, "--output", "{d}/o1"], "--images"),
    "prop-video-missing": ("propagate.py", ["--video", "{d}/nothing.mp4", *P, "--output", "{d}/o1"], "--video"),
    "prop-mask-missing": ("propagate.py", ["--images", "{d}/frames_jpg", "--mask", "{d}/none.png",
                                           "--model", "{d}/w/propagation_model.pth", "--output", "{d}/o1"], "--mask"),
    "prop-model-missing": ("propagate.py", ["--images", "{d}/frames_jpg", "--mask", "{d}/masks/00000.png",
                                            "--model", "{d}/w/none.pth", "--output", "{d}/o1"], "--model"),
    "prop-output-not-given": ("propagate.py", PI, "--output"),
    "prop-images-and-video": ("propagate.py", [*PI, "--video", "{d}/clip.mp4", "--output", "{d}/o1"], "--video"),
    "prop-unknown-option": ("propagate.py", [*PI, "--output", "{d}/o1", "--bogus"], "--bogus"),
    "prop-10000x10-frames": ("propagate.py", ["--images", "{d}/long", "--mask", "{d}/long_mask.png", "--model",
                                              "{d}/w/propagation_model.pth", "--output", "{d}/o1"], "--images"),
    # eval_davis.py / eval_davis_2016.py
    "davis-output-is-the-dataset": ("eval_davis.py", [*E, "--output", "{d}/davis"], "--output"),
    "davis-output-inside-the-dataset": ("eval_davis.py", [*E, "--output", "{d}/davis/Annotations/480p"], "--output"),
    "davis-output-is-a-file": ("eval_davis.py", [*E, "--output", "{d}/afile.txt"], "--output"),
    "davis-output-under-a-file": ("eval_davis.py", [*E, "--output", "{d}/afile.txt/r"], "--output"),
    "davis-top_k-negative": ("eval_davis.py", [*E, "--output", "{d}/o2", "--top_k", "-5"], "--top_k"),
    "davis-device-gpu0": ("eval_davis.py", [*E, "--output", "{d}/o2", "--device", "gpu0"], "--device"),
    "davis-device-cuda-without-gpu": ("eval_davis.py", [*E, "--output", "{d}/o2", "--device", "cuda"], "--device"),
    "davis-split-unknown": ("eval_davis.py", [*E, "--output", "{d}/o2", "--split", "foo"], "--split"),
    "davis-root-missing": ("eval_davis.py", ["--davis", "{d}/nothing", "--model", "{d}/w/propagation_model.pth",
                                             "--output", "{d}/o2"], "--davis"),
    "davis-model-missing": ("eval_davis.py", ["--davis", "{d}/davis", "--model", "{d}/none.pth",
                                              "--output", "{d}/o2"], "--model"),
    "davis-missing-jpeg": ("eval_davis.py", ["--davis", "{d}/davis_nojpeg", "--model", "{d}/w/propagation_model.pth",
                                             "--num_workers", "0", "--output", "{d}/o2"], "--davis"),
    "davis-num_workers-negative": ("eval_davis.py", [*E, "--output", "{d}/o2", "--num_workers", "-1"], "--num_workers"),
    "davis-video-unknown": ("eval_davis.py", [*E, "--output", "{d}/o2", "--video", "nope"], "--video"),
    "davis-imset-missing": ("eval_davis.py", [*E, "--output", "{d}/o2", "--imset", "2017/nope.txt"], "--imset"),
    "davis-score_only-without-results": ("eval_davis.py", [*E, "--output", "{d}/nothing", "--score_only"], "--output"),
    "davis16-output-under-a-file": ("eval_davis_2016.py", [*E, "--output", "{d}/afile.txt/r"], "--output"),
    "davis16-top_k-zero": ("eval_davis_2016.py", [*E, "--output", "{d}/o2", "--top_k", "0"], "--top_k"),
    # eval_youtube.py
    "yv-root-missing": ("eval_youtube.py", ["--yv", "{d}/nothing", "--model", "{d}/w/propagation_model.pth",
                                            "--output", "{d}/o3"], "--yv"),
    "yv-output-is-the-dataset": ("eval_youtube.py", ["--yv", "{d}/davis", "--model", "{d}/w/propagation_model.pth",
                                                     "--output", "{d}/davis"], "--output"),
    "yv-mem_freq-zero": ("eval_youtube.py", ["--yv", "{d}/davis", "--model", "{d}/w/propagation_model.pth",
                                             "--output", "{d}/o3", "--mem_freq", "0"], "--mem_freq"),
    # generate_fusion.py
    "fusion-output-under-a-file": ("generate_fusion.py", [*G, "--output", "{d}/afile.txt/run"], "--output"),
    "fusion-output-inside-the-dataset": ("generate_fusion.py", [*G, "--output", "{d}/davis/run"], "--output"),
    "fusion-separation-zero": ("generate_fusion.py", [*G[:-4], "--separation", "0", "--mem_freq", "1",
                                                      "--output", "{d}/o4"], "--separation"),
    "fusion-bl-without-range": ("generate_fusion.py", ["--dataset", "BL", "--bl_root", "{d}/davis", "--model",
                                                       "{d}/w/propagation_model.pth", "--separation", "2",
                                                       "--mem_freq", "1", "--output", "{d}/o4"], "--range"),
    "fusion-device-gpu0": ("generate_fusion.py", [*G, "--output", "{d}/o4", "--device", "gpu0"], "--device"),
    # try_correspondence.py
    "corr-output-is-a-file": ("try_correspondence.py", [*C, "--points", "1,1", "--output", "{d}/afile.txt"], "--output"),
    "corr-output-holds-the-images": ("try_correspondence.py", [*C, "--points", "1,1", "--output", "{d}/frames_jpg"], "--output"),
    "corr-device-gpu0": ("try_correspondence.py", [*C, "--points", "1,1", "--output", "{d}/o5", "--device", "gpu0"], "--device"),
    "corr-point-syntax": ("try_correspondence.py", [*C, "--points", "3;4", "--output", "{d}/o5"], "--points"),
    "corr-image-missing": ("try_correspondence.py", ["--src_image", "{d}/none.jpg", "--tar_image",
                                                     "{d}/frames_jpg/00001.jpg", "--points", "1,1",
                                                     "--output", "{d}/o5"], "--src_image"),
    # training: every output location before any work
    "train-save_dir-under-a-file": ("train.py", [*T, "--id", "x", "--save_dir", "{d}/afile.txt/saves"], "--save_dir"),
    "train-log_dir-under-a-file": ("train.py", [*T, "--id", "x", "--save_dir", "{d}/s", "--log_dir",
                                                "{d}/afile.txt/log"], "--log_dir"),
    "train-batch-zero": ("train.py", [*T, "-b", "0"], "--batch_size"),
    "train-load_prop-missing": ("train.py", ["--load_prop", "{d}/none.pth"], "--load_prop"),
    "train-lr-negative": ("train.py", [*T, "--lr", "-1"], "--lr"),
    "trainprop-save_dir-is-a-file": ("train_propagation.py", ["--id", "x", "--save_dir", "{d}/afile.txt"], "--save_dir"),
    "trainprop-iterations-zero": ("train_propagation.py", ["-i", "0"], "--iterations"),
    "trainprop-imagenet-missing": ("train_propagation.py", ["--imagenet", "{d}/resnet50.pth"], "--imagenet"),
    "trainprop-load_network-folder": ("train_propagation.py", ["--load_network", "{d}/w"], "--load_network"),
    "trains2m-log_dir-is-a-file": ("train_s2m.py", ["--id", "x", "--log_dir", "{d}/afile.txt"], "--log_dir"),
    "trains2m-save_interval-zero": ("train_s2m.py", ["--save_interval", "0"], "--save_interval"),
    # the DAVIS interactive evaluator: every sequence's files before the session starts
    "interactive-output-under-a-file": ("eval_interactive_davis.py", ["--davis", "{d}/davis", *I, "--output",
                                                                      "{d}/afile.txt/o"], "--output"),
    "interactive-output-is-the-dataset": ("eval_interactive_davis.py", ["--davis", "{d}/davis", *I, "--output",
                                                                        "{d}/davis"], "--output"),
    "interactive-root-missing": ("eval_interactive_davis.py", ["--davis", "{d}/nothing", *I, "--output", "{d}/o6"], "--davis"),
    "interactive-max_interactions-zero": ("eval_interactive_davis.py", ["--davis", "{d}/davis", *I, "--output", "{d}/o6",
                                                                        "--max_interactions", "0"], "--max_interactions"),
    "interactive-missing-annotation": ("eval_interactive_davis.py", ["--davis", "{d}/davis_noann", *I, "--output",
                                                                     "{d}/o6"], "--davis"),
    "interactive-broken-scribble-json": ("eval_interactive_davis.py", ["--davis", "{d}/davis_badjson", *I, "--output",
                                                                       "{d}/o6"], "--davis"),
    "interactive-device-gpu0": ("eval_interactive_davis.py", ["--davis", "{d}/davis", *I, "--output", "{d}/o6",
                                                              "--device", "gpu0"], "--device"),
    "interactive-model-missing": ("eval_interactive_davis.py", ["--davis", "{d}/davis", "--prop_model", "{d}/none.pth",
                                                                "--output", "{d}/o6"], "--prop_model"),
    # the synthetic generator
    "synthetic-out-is-a-file": ("scripts/make_synthetic_davis.py", ["--out", "{d}/afile.txt"], "--out"),
    "synthetic-out-under-a-file": ("scripts/make_synthetic_davis.py", ["--out", "{d}/afile.txt/x"], "--out"),
    "synthetic-objects-too-many": ("scripts/make_synthetic_davis.py", ["--out", "{d}/o7", "--objects", "300"], "--objects"),
    "synthetic-size-too-small": ("scripts/make_synthetic_davis.py", ["--out", "{d}/o7", "--size", "8", "8"], "--size"),
    # the YouTube-VOS resizer: never into its own input
    "resize-output-is-the-input": ("scripts/resize_youtube.py", ["{d}/davis", "{d}/davis"], "output"),
    "resize-output-inside-the-input": ("scripts/resize_youtube.py", ["{d}/davis", "{d}/davis/JPEGImages"], "output"),
    "resize-processes-zero": ("scripts/resize_youtube.py", ["{d}/davis", "{d}/o8", "--processes", "0"], "--processes"),
    # the GUI's arguments (checked before the window and the networks)
    "gui-workspace-under-a-file": ("interactive_gui.py", [*GUI, "--workspace", "{d}/afile.txt/ws"], "--workspace"),
    "gui-workspace-is-the-frames": ("interactive_gui.py", [*GUI, "--workspace", "{d}/frames_jpg"], "--workspace"),
    "gui-mem_profile-out-of-range": ("interactive_gui.py", [*GUI, "--mem_profile", "7"], "--mem_profile"),
    "gui-images-missing": ("interactive_gui.py", [*GUI[:-2], "--images", "{d}/nothing"], "--images"),
    "gui-device-gpu0": ("interactive_gui.py", [*GUI, "--device", "gpu0"], "--device"),
    "gui-resolution-zero": ("interactive_gui.py", [*GUI, "--resolution", "0"], "--resolution"),
}


# Scripts that import torch and the networks before they parse (~7 s of CPU each): a few of their cases run
# by default, the rest with the slow tests.
HEAVY = ("train.py", "train_propagation.py", "train_s2m.py", "interactive_gui.py")
HEAVY_FAST = {"train-save_dir-under-a-file", "train-batch-zero", "trainprop-save_dir-is-a-file",
              "trains2m-log_dir-is-a-file", "gui-workspace-under-a-file", "gui-device-gpu0"}


def _case_params() -> list:
    return [pytest.param(name, marks=[pytest.mark.slow]) if CASES[name][0] in HEAVY and name not in HEAVY_FAST
            else name for name in sorted(CASES)]


@pytest.mark.parametrize("case", _case_params())
def test_bad_input_is_one_line_and_touches_nothing(case, data):
    script, args, flag = CASES[case]
    if "cuda-without-gpu" in case and not NO_GPU:
        pytest.skip("a GPU is present")
    args = [a.format(d=data) for a in args]
    before = snapshot(data)
    proc = run_script(script, args)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:], proc.stdout[-1000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {flag}"), lines[0]
    after = snapshot(data)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, changed


# ------------------------------------------------------------------------------------ the validators
def test_cli_error_renders_one_line():
    e = cli.CliError("--top_k", -5, "must be positive", "e.g. 50")
    assert str(e) == "--top_k -5: must be positive; e.g. 50"
    assert str(cli.CliError("--output", None, "required\noption")) == "--output: required option"
    assert isinstance(e, ValueError)


def test_numbers():
    assert cli.positive_int("--n", 3) == 3
    for bad in (0, -5):
        with pytest.raises(cli.CliError, match=rf"^--n {bad}: must be a positive"):
            cli.positive_int("--n", bad)
    assert cli.non_negative_int("--n", 0) == 0
    with pytest.raises(cli.CliError, match="^--n -1: "):
        cli.non_negative_int("--n", -1)
    assert cli.int_in_range("--p", 3, 0, 3) == 3
    with pytest.raises(cli.CliError, match="^--p 4: must be between 0 and 3"):
        cli.int_in_range("--p", 4, 0, 3)
    with pytest.raises(cli.CliError, match="^--lr nan: "):
        cli.positive_float("--lr", float("nan"))
    assert cli.resolution("--r", -1) == -1 and cli.resolution("--r", 480) == 480
    for bad in (0, -2, 8):
        with pytest.raises(cli.CliError, match=f"^--r {bad}: "):
            cli.resolution("--r", bad)


def test_device():
    assert cli.device("--device", "cpu") == torch.device("cpu")
    assert cli.device("--device", None).type in ("cpu", "cuda")
    with pytest.raises(cli.CliError, match=r"^--device gpu0: unknown device 'gpu0'; use auto, cpu, cuda or cuda:N$"):
        cli.device("--device", "gpu0")
    if NO_GPU:
        with pytest.raises(cli.CliError, match="^--device cuda: .*no CUDA GPU"):
            cli.device("--device", "cuda")


def test_input_paths(tmp_path):
    f = tmp_path / "f.png"
    f.write_bytes(b"x")
    assert cli.input_file("--mask", f) == f and cli.input_dir("--images", tmp_path) == tmp_path
    with pytest.raises(cli.CliError, match="not found"):
        cli.input_file("--mask", tmp_path / "none.png")
    with pytest.raises(cli.CliError, match="is a folder"):
        cli.input_file("--mask", tmp_path)
    with pytest.raises(cli.CliError, match="is a file"):
        cli.input_dir("--images", f)
    with pytest.raises(cli.CliError, match="not found"):
        cli.input_dir("--images", tmp_path / "none")


def test_output_folder_is_refused_where_it_would_touch_inputs(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"frame")
    mask = tmp_path / "m" / "00000.png"
    mask.parent.mkdir()
    mask.write_bytes(b"mask")
    inputs = {"--images": frames, "--mask": mask, "--video": None}
    for out, problem in ((frames, "is the same path as --images"), (frames / "sub", "lies inside the input --images"),
                         (tmp_path, "contains the input"), (mask.parent, "contains the input --mask"),
                         (mask, "is an existing file"), (mask / "x", "cannot be created: .* is a file")):
        with pytest.raises(cli.CliError, match=problem):
            cli.output_dir("--output", out, inputs)
    # another spelling of the same folder (a symlink, a relative ..) is the same folder
    link = tmp_path / "link"
    link.symlink_to(frames)
    with pytest.raises(cli.CliError, match="same path"):
        cli.output_dir("--output", link, inputs)
    with pytest.raises(cli.CliError, match="same path"):
        cli.output_dir("--output", frames / ".." / "frames", inputs)
    out = cli.output_dir("--output", tmp_path / "new" / "deep", inputs)
    assert out.is_dir()   # created up front


def test_output_file(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"v")
    assert cli.output_file("--overlay", tmp_path / "a" / "o.mp4", {"--video": video}, (".mp4",)).parent.is_dir()
    with pytest.raises(cli.CliError, match="same path as --video"):
        cli.output_file("--overlay", video, {"--video": video}, (".mp4",))
    with pytest.raises(cli.CliError, match=r"must end in \.mp4"):
        cli.output_file("--overlay", tmp_path / "o.avi", {}, (".mp4",))
    with pytest.raises(cli.CliError, match="is a folder"):
        cli.output_file("--overlay", tmp_path, {})
    with pytest.raises(cli.CliError, match="is a file"):
        cli.output_file("--overlay", video / "o.mp4", {})


def test_argparse_errors_become_one_line(capsys):
    p = cli.CliParser(prog="x")
    p.add_argument("--n", type=int)
    p.add_argument("--c", choices=("a", "b"))
    p.add_argument("-b", "--batch_size", type=int)
    p.add_argument("--req", required=True)
    for argv, line in ((["--req", "1", "--n", "abc"], "error: --n abc: not a valid integer value; give a whole number"),
                       (["--req", "1", "--c", "z"], "error: --c z: not one of the choices; choose from 'a', 'b'"),
                       (["--req", "1", "-b", "x"], "error: --batch_size x: not a valid integer value; give a whole number"),
                       ([], "error: --req: required option missing; see -h (missing: --req)"),
                       (["--req", "1", "--zz"], "error: --zz: unrecognized argument; see -h for the options "
                                                "(unrecognized: --zz)")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip() == line


def test_run_cli_tail(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def bad(_):
        raise cli.CliError("--x", 1, "wrong", "fix it")

    assert cli.run_cli(bad, None) == 2
    assert capsys.readouterr().err == "error: --x 1: wrong; fix it\n"

    def crash(_):
        raise KeyError("boom\nsecond line")

    assert cli.run_cli(crash, None) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: KeyError: ") and "MIVOS_DEBUG=1" in err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError):
        cli.run_cli(crash, None)
    monkeypatch.delenv(cli.DEBUG_ENV)
    with pytest.raises(KeyError):
        cli.run_cli(crash, argparse.Namespace(debug=True))

    def ctrl_c(_):
        raise KeyboardInterrupt

    assert cli.run_cli(ctrl_c, None) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def sigterm(_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)   # the handler raises before this ends
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert cli.run_cli(sigterm, None) == 143
    assert capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGTERM) is previous

    # an error type named lazily counts once its module is imported
    def checkpoint(_):
        from util.checkpoint import CheckpointError
        raise CheckpointError("x.pth: not a checkpoint")

    assert cli.run_cli(checkpoint, None, ("util.checkpoint:CheckpointError",)) == 2
    assert capsys.readouterr().err == "error: x.pth: not a checkpoint\n"


def test_dataloader_worker_error_names_the_file(tmp_path):
    """A corrupt JPEG in a training set: the one line names the file, also from a DataLoader worker."""
    from torch.utils.data import DataLoader

    from dataset.layout import DatasetError
    from dataset.synthetic import generate_davis
    from dataset.vos_dataset import VOSDataset
    generate_davis(tmp_path / "d", num_sequences=1, num_frames=4, size=(64, 48), num_objects=(1,), seed=0)
    frames = tmp_path / "d" / "JPEGImages" / "480p"
    for jpg in (frames / "synth-000").glob("*.jpg"):
        jpg.write_bytes(jpg.read_bytes()[:200])   # truncated: the header reads, the data does not
    ds = VOSDataset(frames, tmp_path / "d" / "Annotations" / "480p", 1, is_bl=False, crop_size=32, verbose=False)
    with pytest.raises(DatasetError, match=r"synth-000/0000\d\.jpg: cannot read the image"):
        ds[0]
    loader = DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    line = cli.first_line(e.value)
    assert "synth-000/0000" in line and ".jpg: cannot read the image" in line and "\n" not in line


def test_interrupted_training_saves_and_exits_non_zero(tmp_path, capsys):
    """SIGTERM during training: the checkpoint is saved, the script exits 143 (so `... && next` stops)."""
    from tests.test_trainer_infra import make_toy
    from util.train_setup import script_main

    def parse(argv):
        return {"iterations": 100, "batch_size": 8, "id": "NULL"}

    def run(para):
        trainer, loader = make_toy(tmp_path, iterations=para["iterations"])
        trainer.sigterm_at = 2
        trainer.iteration = trainer.fit(loader)
        return trainer

    assert script_main("toy.py", parse, run, ()) == 143
    assert torch.load(tmp_path / "run" / "run_checkpoint.pth", weights_only=True)["it"] == 3
    assert "toy.py: interrupted by SIGTERM at iteration 3 (checkpoint saved" in capsys.readouterr().err


def test_training_output_folders_are_created_up_front(tmp_path):
    from util.hyper_para import parse_s2m_args
    from util.train_setup import validate_training_args
    para = parse_s2m_args(["--id", "run", "--save_dir", str(tmp_path / "s" / "deep"), "--log_dir", str(tmp_path / "l")])
    validate_training_args(para)
    assert (tmp_path / "s" / "deep").is_dir() and (tmp_path / "l").is_dir()
    validate_training_args(parse_s2m_args(["--save_dir", str(tmp_path / "afile" / "x")]))   # --id NULL saves nothing


# ------------------------------------------------------------------------------ frames: size and count
def test_working_size_is_bounded():
    from util.video_io import MAX_ASPECT, working_size
    assert working_size(854, 480, 480) == (854, 480)           # the original formula where it is sane
    assert working_size(640, 480, 480) == (640, 480)
    assert working_size(1920, 1080, 480) == (853, 480)
    assert working_size(1920, 480, 480) == (1920, 480)         # 4:1 still keeps the shorter side
    w, h = working_size(10000, 10, 480)
    assert max(w, h) <= MAX_ASPECT * 480 and (w, h) == (1920, 1)
    assert working_size(100, 4000, 480) == (48, 1920)
    assert working_size(10000, 10, -1) == (10000, 10)


def test_elongated_frames_fail_fast_naming_resolution(tmp_path):
    import cv2

    from util.video_io import FrameSourceError, ImageFolderSource
    (tmp_path / "f").mkdir()
    cv2.imwrite(str(tmp_path / "f" / "00000.jpg"), np.zeros((10, 10000, 3), np.uint8))
    with pytest.raises(FrameSourceError, match=r"^--images .*10000x10.*--resolution 480"):
        ImageFolderSource(tmp_path / "f", resolution=480)
    cv2.imwrite(str(tmp_path / "f" / "00000.jpg"), np.zeros((100, 2000, 3), np.uint8))
    assert ImageFolderSource(tmp_path / "f", resolution=480).size == (1920, 96)


def test_one_frame_and_truncated_videos(tmp_path):
    import cv2

    from dataset.synthetic import make_clip, write_video
    from util.video_io import VideoFileSource
    clip = make_clip(30, 64, 48, 1, seed=0)
    one = write_video(tmp_path / "one.mp4", clip.frames[:1])
    src = VideoFileSource(one, resolution=-1)
    assert len(src) == 1 and src.notice is None
    assert src[0].shape == (48, 64, 3) and src.read_original(0).shape == (48, 64, 3)

    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (64, 48))
    for f in clip.frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    raw = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(raw[:len(raw) // 2])
    src = VideoFileSource(tmp_path / "cut.avi", resolution=-1)
    assert 0 < len(src) < 30 and src.claimed_frames == 30
    assert src.notice == (f"--video {tmp_path / 'cut.avi'}: the file claims 30 frames but only {len(src)} decode "
                          f"(truncated?); processing those {len(src)} frames")
    assert src[len(src) - 1].shape == (48, 64, 3)


# ----------------------------------------------------------------------- end to end with seeded weights
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from tests.helpers_weights import write_seeded_checkpoints
    folder = tmp_path_factory.mktemp("weights")
    write_seeded_checkpoints(folder, ("propagation_model",))
    return folder / "propagation_model.pth"


@pytest.mark.slow
def test_one_frame_video_propagates(data, weights, tmp_path):
    from dataset.synthetic import make_clip, write_video
    clip = make_clip(1, 64, 48, 1, seed=0)
    video = write_video(tmp_path / "one.mp4", clip.frames)
    proc = run_script("propagate.py", ["--video", str(video), "--mask", str(data / "masks" / "00000.png"),
                                       "--model", str(weights), "--output", str(tmp_path / "o"), "--quiet",
                                       "--device", "cpu", "--resolution", "-1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("1 frame, 1 object(s)")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["00000.png"]


@pytest.mark.slow
def test_sigterm_leaves_no_overlay_under_the_final_name(data, weights, tmp_path):
    from dataset.synthetic import make_clip, write_video
    clip = make_clip(200, 64, 48, 1, seed=0)
    video = write_video(tmp_path / "long.mp4", clip.frames)
    from util.palette import save_mask_png
    save_mask_png(tmp_path / "m.png", clip.labels[0])
    overlay = tmp_path / "ov" / "overlay.mp4"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "propagate.py", "--video", str(video), "--mask", str(tmp_path / "m.png"),
                             "--model", str(weights), "--output", str(tmp_path / "o"), "--overlay", str(overlay),
                             "--quiet", "--device", "cpu", "--resolution", "-1", "--top_k", "5"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((tmp_path / "o").glob("*.png"))) < 3 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip() == "interrupted" and "Traceback" not in err
    assert not overlay.exists() and not list(overlay.parent.glob("*.tmp.mp4"))


@pytest.mark.slow
def test_eval_davis_missing_annotation_frame_scores_by_name(data, weights, tmp_path):
    """Frames and annotations are matched by name: the masks keep the frames' names."""
    out = tmp_path / "r"
    proc = run_script("eval_davis.py", ["--davis", str(data / "davis"), "--model", str(weights), "--output", str(out),
                                        "--num_workers", "0", "--device", "cpu", "--top_k", "5"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    jpgs = sorted(p.stem for p in (data / "davis" / "JPEGImages" / "480p" / "synth-000").glob("*.jpg"))
    assert sorted(p.stem for p in (out / "synth-000").glob("*.png")) == jpgs
    assert json.loads((out / "scores.json").read_text())["global"]["sequences"] == 1


def test_unreadable_checkpoint_hint_never_says_to_delete_a_users_file(tmp_path):
    from util.checkpoint import CheckpointError, read_state_dict
    mine = tmp_path / "first_frame.png"
    mine.write_bytes(b"\x89PNG not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        read_state_dict(mine)
    assert "delete" not in str(e.value) and "download_model.py" in str(e.value)
    broken = tmp_path / "saves" / "fusion.pth"
    broken.parent.mkdir()
    broken.write_bytes(b"truncated download")
    with pytest.raises(CheckpointError, match="delete it and run `python download_model.py`"):
        read_state_dict(broken)
