"""Helpers for the training tests: a small DAVIS-layout set and subprocess runners for the scripts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Frames of 112×128: the smallest size whose 1/16 feature map (7×8 = 56 positions) still feeds the
# propagation network's top-50 memory read from a single memory frame.
FRAME_SIZE = (128, 112)  # (W, H)
CROP = 48


def make_davis_set(davis_2017: Path, num_frames: int = 3, seed: int = 3) -> Path:
    """DAVIS 2017 layout under ``davis_2017/trainval`` with two train videos of ``num_frames`` frames (2 objects and 1 object)
    and one val video; returns ``davis_2017``."""
    from dataset.synthetic import generate_davis
    generate_davis(davis_2017 / "trainval", num_sequences=1, num_train_sequences=2, num_frames=num_frames,
                   size=FRAME_SIZE, num_objects=(1, 2, 1), seed=seed)
    return davis_2017


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_script(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python <args>`` with this interpreter (the project venv) in ``cwd``."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=script_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_torchrun(nproc: int, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node=N <args>`` on a free local port."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={port}"]
    return run_script([*launcher, *args], cwd, timeout)
