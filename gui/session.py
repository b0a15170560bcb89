"""Command line of the annotation GUI and building a session from it (Qt-free).

``build_parser()`` holds every option of the original ``interactive_gui.py`` plus ``--device`` and
``--workspace``; :func:`open_session` loads the networks, opens the frames lazily and returns a
ready :class:`~gui.controller.AnnotationController`. Errors are one-line exceptions
(:class:`util.checkpoint.CheckpointError`, :class:`util.video_io.FrameSourceError`,
:class:`SessionError`) that the entry point prints without a traceback.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

import torch

from gui.controller import AnnotationController
from gui.workspace import Workspace
from util.video_io import DEFAULT_CACHE_FRAMES, open_frames


class SessionError(ValueError):
    """Bad command-line input that is not a frame or checkpoint problem. One line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiVOS interactive video object segmentation GUI")
    p.add_argument("--prop_model", default="saves/propagation_model.pth", help="propagation network weights")
    p.add_argument("--fusion_model", default="saves/fusion.pth", help="fusion network weights")
    p.add_argument("--s2m_model", default="saves/s2m.pth", help="Scribble-to-Mask weights")
    p.add_argument("--fbrs_model", default="saves/fbrs.pth", help="f-BRS weights (resnet50_dh128_lvis.pth)")
    p.add_argument("--images", help="folder of frames (.jpg, else .png); wins over --video")
    p.add_argument("--video", default="example/example.mp4", help="any video OpenCV can read")
    p.add_argument("--num_objects", type=int, help="default: masks.max() with --masks, else 1 "
                   "(more can be added in the GUI)")
    p.add_argument("--mem_freq", type=int, default=5, help="memory period (frames) of the propagation")
    p.add_argument("--mem_profile", type=int, default=0,
                   help="0 - fastest, most GPU memory; 1; 2; 3 - slowest, least GPU memory. Default: 0")
    p.add_argument("--masks", help="optional folder of masks (palette PNGs); only sets --num_objects")
    p.add_argument("--no_amp", action="store_true",
                   help="float32 everywhere (no fp16 autocast on CUDA, no reduced precision on CPU)")
    p.add_argument("--precision", default=None,
                   help="precision of all networks: float32 (exact), bfloat16 (fast on CPUs with "
                        "AVX-512-BF16/AMX), float16 (CUDA) or auto (the fast one for the device); default: float16 "
                        "on CUDA; on CPU float32, except S2M in bfloat16 where the CPU has native bf16 (measured "
                        "without loss on trained weights)")
    p.add_argument("--resolution", type=int, default=480,
                   help="shorter side to work at; -1 keeps the original size. Exports are always at the "
                        "original size")
    p.add_argument("--device", default="auto", help="where the networks run: auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--workspace", help="folder for autosaved masks and the session (default "
                   "workspace/<video name>)")
    p.add_argument("--feature_cache_mb", type=int, default=256,
                   help="memory for cached query features, which make a second propagation over the same frames "
                        "faster (default %(default)s MiB, about 6 frames at 480p: with it a full pass over 1000 "
                        "frames at 480p with 3 objects stays within 5 GB; the original keeps 105 frames, 4.6 GB "
                        "at 480p)")
    p.add_argument("--memory_ram_mb", type=int, default=256,
                   help="memory for the values of a propagation's memory bank; frames committed beyond it are "
                        "written, bit for bit, to an anonymous file in the workspace and only the rows a query "
                        "reads are read back (default %(default)s MiB, about 25 frames at 480p with 3 objects)")
    p.add_argument("--cache_frames", type=int, default=DEFAULT_CACHE_FRAMES,
                   help="decoded frames kept in RAM (default %(default)s)")
    return p


def resolve_device(name: str) -> torch.device:
    """``--device`` through the project's one device decision (:func:`util.precision.resolve_device`)."""
    from util.precision import resolve_device as _resolve
    try:
        return _resolve(name)
    except ValueError as e:
        raise SessionError(f"--device {name}: {e}") from None


def precision_text(device: torch.device, propagation: str, amp: bool, scribbles: str = "float32",
                   clicks_available: bool = True) -> str:
    """The line that tells the user where the networks run and in which precision: propagation (and
    fusion), scribbles (S2M) and clicks (f-BRS, which follows the propagation's choice: float32 is its
    exact path, a reduced precision its BN-folded fast path, still float32 arithmetic)."""
    from util.precision import describe_compute

    def how(precision: str) -> str:
        return describe_compute(device, precision).split(", ", 1)[1]
    if not clicks_available:
        clicks = "off (no --fbrs_model)"
    elif amp:
        clicks = "float16 autocast"
    else:
        clicks = "float32 (exact)" if propagation == "float32" else "float32 (fast path, equal up to rounding)"
    interactions = f"scribbles {'float16 autocast' if amp else how(scribbles)}, clicks {clicks}"
    return f"device {device}: propagation {how(propagation)}, {interactions}"


def _resolve_precision(args: argparse.Namespace, device: torch.device, network: str) -> str:
    """``--precision`` / ``--no_amp`` → the precision of ``network`` (util.precision decides the default)."""
    from util.precision import default_precision, resolve_device_precision
    requested = args.precision if getattr(args, "precision", None) else default_precision(device, network)
    try:
        return resolve_device_precision(device, requested, no_amp=args.no_amp)[1]
    except ValueError as e:
        raise SessionError(f"--precision {args.precision}: {e}") from None


def resolve_propagation_precision(args: argparse.Namespace, device: torch.device) -> str:
    """``--precision`` / ``--no_amp`` → the propagation precision (util.precision decides the default)."""
    return _resolve_precision(args, device, "propagation")


def resolve_scribble_precision(args: argparse.Namespace, device: torch.device) -> str:
    """The S2M network's precision. On CUDA the interaction networks run under the controller's fp16
    autocast (the original's amp), so S2M itself is float32 there; on CPU ``--no_amp`` forces float32,
    ``--precision P`` runs S2M in P as well, and otherwise S2M runs in its measured default
    (:func:`util.precision.default_precision`: bfloat16 on CPUs with native bf16)."""
    if device.type == "cuda":
        return "float32"
    return _resolve_precision(args, device, "s2m")


def _spill_dir(workspace: Workspace) -> Path | None:
    """The workspace folder when probabilities and memory values can be spilled there, else None
    (all kept in memory)."""
    try:
        workspace.root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return workspace.root if os.access(workspace.root, os.W_OK) else None


def count_objects_in_masks(folder: str) -> int:
    """The original's ``masks.max()`` (255-valued binary masks count as one object)."""
    from util.palette import load_mask_png
    path = Path(folder)
    files = sorted(path.glob("*.png")) if path.is_dir() else []
    if not files:
        raise SessionError(f"--masks {folder}: no .png masks in this folder; pass a folder of palette PNGs")
    first = load_mask_png(files[0])
    if first.max() == 255:
        return 1
    return max(int(load_mask_png(f).max()) for f in files)


class Networks:
    """The loaded networks of a session."""

    def __init__(self, prop, fusion, s2m, fbrs):
        self.prop, self.fusion, self.s2m, self.fbrs = prop, fusion, s2m, fbrs


def _load(loader, flag: str, path: str, device: torch.device):
    """``loader(path, device)``; a CheckpointError is re-raised naming the option and the path the
    user passed, with a fix for that path (the download only helps for the default one)."""
    from util.checkpoint import DOWNLOAD_HINT, CheckpointError
    try:
        return loader(path, device)
    except CheckpointError as e:
        reason = first_line(e)
        for text in ("; delete it and " + DOWNLOAD_HINT, "; " + DOWNLOAD_HINT):
            reason = reason.replace(text, "")
        default = build_parser().get_default(flag.lstrip("-"))
        if Path(path) == Path(default):
            fix = "run `python download_model.py` (it writes " + str(default) + ")"
        else:
            fix = (f"check {path} or pass another file with {flag} (`python download_model.py` writes the "
                   f"official one to {default})")
        raise CheckpointError(f"{flag} {path}: {reason.removeprefix(str(path) + ': ')}; {fix}") from None


def load_networks(args, device: torch.device) -> Networks:
    """Load the four networks (a missing or broken file raises CheckpointError naming the option, the
    path given and the fix)."""
    from model.factory import load_fbrs, load_fusion, load_propagation, load_s2m
    prop = _load(load_propagation, "--prop_model", args.prop_model, device)
    fusion = _load(load_fusion, "--fusion_model", args.fusion_model, device)
    s2m = _load(load_s2m, "--s2m_model", args.s2m_model, device)
    fbrs = _load(load_fbrs, "--fbrs_model", args.fbrs_model, device) if args.fbrs_model else None
    return Networks(prop, fusion, s2m, fbrs)


def default_workspace(frames) -> Path:
    return Path("workspace") / frames.name


def open_session(args, log: Callable[[str], None] | None = None, networks: Networks | None = None,
                 fbrs_controller=None) -> AnnotationController:
    """Everything from parsed ``args`` to a controller. ``networks`` / ``fbrs_controller`` may be
    given to reuse already loaded ones (tests)."""
    device = resolve_device(args.device)
    precision = resolve_propagation_precision(args, device)   # checked before any frame is decoded
    scribble_precision = resolve_scribble_precision(args, device)
    if args.num_objects is not None and args.num_objects < 1:
        raise SessionError(f"--num_objects {args.num_objects}: must be at least 1")
    if args.mem_freq < 1:
        raise SessionError(f"--mem_freq {args.mem_freq}: must be at least 1")
    if args.feature_cache_mb < 0:
        raise SessionError(f"--feature_cache_mb {args.feature_cache_mb}: must be at least 0 (0 caches nothing)")
    if args.memory_ram_mb < 0:
        raise SessionError(f"--memory_ram_mb {args.memory_ram_mb}: must be at least 0")
    # frames first: a bad video is reported before minutes of model loading
    if not args.images and args.video == build_parser().get_default("video") and not Path(args.video).exists():
        from util.video_io import FrameSourceError
        raise FrameSourceError(f"--video {args.video}: the example clip is missing; run `python download_model.py` "
                               "(it fetches it) or pass --video FILE / --images FOLDER")
    frames = open_frames(images=args.images, video=None if args.images else args.video,
                         resolution=args.resolution, cache_frames=args.cache_frames)
    if len(frames) < 2:
        raise SessionError(f"{frames.path}: has {len(frames)} frame; at least 2 are needed to propagate")
    num_objects = args.num_objects
    if num_objects is None:
        num_objects = count_objects_in_masks(args.masks) if args.masks else 1
    if networks is None:
        networks = load_networks(args, device)

    from inference_core import InferenceCore
    from inference_core.interaction.s2m_controller import S2MController
    amp = not args.no_amp and device.type == "cuda"
    # the original runs everything under fp16 autocast on CUDA unless --no_amp; elsewhere the propagation
    # precision is the measured default of util.precision (float32 unless a faster one is proven as good)
    workspace = Workspace(Path(args.workspace) if args.workspace else default_workspace(frames))
    spill_dir = _spill_dir(workspace)
    core = InferenceCore(networks.prop, networks.fusion, frames, int(num_objects),
                         mem_profile=args.mem_profile, mem_freq=args.mem_freq, device=device,
                         precision=precision,
                         # probabilities and memory-bank values beyond their RAM budgets go to the
                         # workspace (bit-exact), so long clips fit in memory; the files are anonymous
                         # and vanish with the process
                         prob_spill_dir=spill_dir,
                         memory_spill_dir=spill_dir, memory_ram_bytes=args.memory_ram_mb * 2 ** 20,
                         feature_cache_bytes=args.feature_cache_mb * 2 ** 20)
    if fbrs_controller is None and networks.fbrs is not None:
        try:
            from inference_core.interaction.fbrs_controller import FBRSController
            # f-BRS follows the propagation precision: float32 is the original's exact path; a reduced
            # precision selects the BN-folded fast path (equal only up to rounding)
            fbrs_controller = FBRSController(networks.fbrs, device, precision=precision)
        except ImportError:
            fbrs_controller = None
    device_text = precision_text(device, core.precision, amp, scribble_precision,
                                 clicks_available=fbrs_controller is not None)
    s2m_net = networks.s2m
    controller = AnnotationController(
        core, frames, lambda k: S2MController(s2m_net, k, ignore_class=255, device=device,
                                              precision=scribble_precision),
        fbrs_controller, workspace, log=log, amp=amp, device_text=device_text)
    return controller


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

