"""Train small stand-in checkpoints (official layouts) on generated clips, on CPU, and judge them held-out.

The official weights cannot be shipped with the tests; formula weights prove equivalence but not quality.
This script makes a propagation checkpoint that actually follows objects, reproducibly (seeded):

1. renders ``--train-clips`` clips of textured objects on textured backgrounds (:mod:`dataset.synthetic`)
   in the video layout the trainer reads (``JPEGImages/<clip>/*.jpg``, ``Annotations/<clip>/*.png``);
2. trains :class:`model.propagation.train_net.PropagationTrainingNetwork` (two objects per sample, the
   layout of ``propagation_model.pth``) with the project's trainer (:class:`train_propagation.
   PropagationTrainer`, :class:`dataset.vos_dataset.VOSDataset`, the bootstrapped CE of
   :mod:`model.losses`). Differences from the original schedule, because there is no ImageNet-pretrained
   encoder here: every encoder bottleneck starts as the identity (``--zero-init-residual``), BatchNorm in
   training mode (random running statistics are meaningless), a higher learning rate, the
   hard-pixel bootstrapping off by default (``--warm``), a small crop, a bf16 training forward where the CPU has
   native bf16;
3. recomputes the BatchNorm statistics on whole training frames (:func:`recalibrate_batchnorm`,
   ``--no-bn-recalibrate`` keeps those of training);
4. evaluates J&F on held-out clips (other seeds) in float32 and bfloat16 and the pixel agreement of
   bfloat16 with float32 (:mod:`inference_core.standin_eval`);
5. makes fusion training data from the training clips with that propagation stand-in (``generate_fusion.py``'s
   pass from every ``--fusion-separation``-th frame) and trains :class:`model.fusion_net.FusionNet` with the
   project's fusion trainer (:class:`train.FusionTrainer`, :class:`dataset.fusion_dataset.FusionDataset`);
6. judges the fusion stand-in on a second round of the held-out clips (the last frame's ground truth after
   frame 0's: the backward pass is fused with round 1) against the same round without fusion
   (:func:`inference_core.standin_eval.evaluate_fusion`), in float32 and bfloat16;
7. writes ``<out>/propagation_model.pth`` and ``<out>/fusion.pth`` (load with ``model.factory.load_propagation``
   / ``load_fusion``, strict) and ``<out>/standins.json`` (settings, learning curves, held-out numbers).

Usage::

    python scripts/make_standins.py                 # ~/.cache/fastermivos/standins/ (all three: about three hours on 2 cores)
    python scripts/make_standins.py --tiny --out /tmp/standins   # a few iterations (CI smoke run)
    python scripts/make_standins.py --only fusion    # the fusion stand-in again, on the propagation one in place
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from util import cli  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "fastermivos" / "standins"
PROP_FILE = "propagation_model.pth"
FUSION_FILE = "fusion.pth"
S2M_FILE = "s2m.pth"
REPORT_FILE = "standins.json"


def build_parser() -> argparse.ArgumentParser:
    p = cli.CliParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the checkpoints and standins.json")
    p.add_argument("--tiny", action="store_true", help="a few iterations on tiny clips (smoke run, seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training clips, weights and sampling")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default 900; tiny 3)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training after this many minutes even before --iterations (default: no limit)")
    p.add_argument("--crop", type=int, default=None, help="training crop (default 96; tiny 64)")
    p.add_argument("--batch", type=int, default=None, help="samples per iteration (default 2)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (see --schedule)")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="learning rate over the run: step (×0.1 at 80 %%, default) or cosine (to 0 at the end)")
    p.add_argument("--train-clips", type=int, default=None, help="generated training clips (default 48)")
    p.add_argument("--eval-clips", type=int, default=None,
                   help="held-out clips every stand-in is judged on (default 24: one clip's J&F varies widely, "
                        "and the mean of 6 moved by ±0.08 between sets of clips)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--eval-every", type=int, default=0, help="held-out float32 J&F every N iterations (0: end only)")
    p.add_argument("--warm", type=float, nargs=2, default=(1.0, 1.0), metavar=("START", "END"),
                   help="hard-pixel bootstrapping: plain CE before START, top 15 %% from END (fractions of the "
                        "run; default 1 1: plain CE throughout, which followed held-out objects better)")
    p.add_argument("--bn-freeze", type=float, default=0.3, metavar="FRACTION",
                   help="BatchNorm statistics frozen (eval mode, as inference uses them) from this fraction of "
                        "the run on (default 0.3; 1: never); the statistics are recomputed after training")
    p.add_argument("--bn-freeze-exact", action=argparse.BooleanOptionalAction, default=True,
                   help="at --bn-freeze, first recompute the statistics on whole training frames (as after "
                        "training), so the rest of the run trains against exact statistics instead of the "
                        "noisy ones of two small crops (default on; --no-bn-freeze-exact freezes the running "
                        "averages of training)")
    p.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=True,
                   help="start every encoder bottleneck as the identity (last BatchNorm scale 0; default on)")
    p.add_argument("--freeze-encoders", action="store_true",
                   help="train only the key/value projections and the decoder (the ResNet trunks keep their "
                        "initialisation; about three times cheaper per iteration)")
    p.add_argument("--no-bn-recalibrate", dest="bn_recalibrate", action="store_false",
                   help="keep the BatchNorm statistics of training instead of recomputing them on whole "
                        "training frames after training (and before every --eval-every evaluation)")
    p.add_argument("--train-precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="autocast dtype of the training forward; auto: bfloat16 on CPUs with native bf16 "
                        "(AVX-512-BF16/AMX: faster), else float32")
    p.add_argument("--judge-bf16", choices=("auto", "on", "off"), default="auto",
                   help="also judge every stand-in in bfloat16 (J&F and pixel agreement with float32); auto: on "
                        "CPUs with native bf16 only (emulated bf16 is about 14× slower than float32, and no "
                        "default precision there can be bf16)")
    p.add_argument("--train-objects", type=int, nargs="+", default=None, metavar="K",
                   help="objects per training clip, cycled over the clips (default 2 3 1)")
    p.add_argument("--max-jump", type=int, default=3, help="largest frame gap between the three sampled frames")
    p.add_argument("--only", choices=("propagation", "fusion", "s2m"), default=None,
                   help="make one stand-in: propagation, fusion (on the propagation stand-in already in --out) or "
                        "s2m (default: all three, propagation first)")
    f = p.add_argument_group("fusion stand-in")
    f.add_argument("--fusion-iterations", type=int, default=None, help="fusion training iterations (default 1500; tiny 2)")
    f.add_argument("--fusion-batch", type=int, default=None, help="fusion samples per iteration (default 4)")
    f.add_argument("--fusion-crop", type=int, default=None, help="fusion training crop (default 96; tiny 48)")
    f.add_argument("--fusion-lr", type=float, default=1e-4, help="fusion Adam learning rate (×0.1 at 80 %%)")
    f.add_argument("--fusion-separation", type=int, default=3,
                   help="frames between the reference frames of the fusion data (generate_fusion.py --separation)")
    g = p.add_argument_group("S2M stand-in")
    g.add_argument("--s2m-iterations", type=int, default=None, help="S2M training iterations (default 1500; tiny 2)")
    g.add_argument("--s2m-batch", type=int, default=None, help="S2M samples per iteration (default 4)")
    g.add_argument("--s2m-crop", type=int, default=None, help="S2M training crop (default 128; tiny 64)")
    g.add_argument("--s2m-lr", type=float, default=1e-4, help="S2M Adam learning rate (×0.1 at 80 %%)")
    return p


def resolve_settings(args: argparse.Namespace) -> dict:
    tiny = args.tiny
    s = {"seed": args.seed, "tiny": tiny,
         "iterations": args.iterations if args.iterations is not None else (3 if tiny else 900),
         "crop": args.crop if args.crop is not None else (64 if tiny else 96),
         "batch": args.batch if args.batch is not None else 2, "lr": args.lr, "schedule": args.schedule, "minutes": args.minutes,
         "train_clips": args.train_clips if args.train_clips is not None else (3 if tiny else 48),
         "eval_clips": args.eval_clips if args.eval_clips is not None else (1 if tiny else 24),
         "clip_size": [160, 80] if tiny else [160, 128], "clip_frames": 6 if tiny else 12,
         # held-out clips: the top-50 memory read needs >= 50 positions at stride 16 (160×128: 80)
         "eval_size": [160, 128],
         "eval_frames": 5 if tiny else 16, "max_jump": args.max_jump,
         "warm": list(args.warm), "bn_freeze": args.bn_freeze, "bn_freeze_exact": args.bn_freeze_exact,
         "bn_recalibrate": args.bn_recalibrate, "zero_init_residual": args.zero_init_residual,
         "freeze_encoders": args.freeze_encoders, "train_precision": _train_precision(args.train_precision),
         "judge_precisions": _judge_precisions(args.judge_bf16),
         "eval_every": args.eval_every, "objects": list(args.train_objects or [2, 3, 1]), "only": args.only,
         "fusion_iterations": args.fusion_iterations if args.fusion_iterations is not None else (2 if tiny else 1500),
         "fusion_batch": args.fusion_batch if args.fusion_batch is not None else (2 if tiny else 4),
         "fusion_crop": args.fusion_crop if args.fusion_crop is not None else (48 if tiny else 96),
         "fusion_lr": args.fusion_lr, "fusion_separation": args.fusion_separation, "fusion_mem_freq": 5,
         "s2m_iterations": args.s2m_iterations if args.s2m_iterations is not None else (2 if tiny else 1500),
         "s2m_batch": args.s2m_batch if args.s2m_batch is not None else (2 if tiny else 4),
         "s2m_crop": args.s2m_crop if args.s2m_crop is not None else (64 if tiny else 128),
         "s2m_lr": args.s2m_lr, "s2m_frame_step": 4}
    for name in ("iterations", "crop", "batch", "train_clips", "eval_clips", "fusion_iterations", "fusion_batch",
                 "fusion_crop", "fusion_separation", "s2m_iterations", "s2m_batch", "s2m_crop"):
        if s[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} {s[name]}: must be at least 1")
    if s["only"] in (None, "propagation") and s["batch"] > s["train_clips"]:
        raise ValueError(f"--batch {s['batch']}: more than the {s['train_clips']} training clips (one sample per "
                         "clip and epoch); lower it or raise --train-clips")
    if not all(1 <= k <= 254 for k in s["objects"]):
        raise ValueError(f"--train-objects {' '.join(map(str, s['objects']))}: each count must be from 1 to 254 "
                         "(objects in a palette PNG)")
    if s["bn_freeze"] is not None and not 0.0 <= s["bn_freeze"] <= 1.0:
        raise ValueError(f"--bn-freeze {s['bn_freeze']}: must be a fraction of the run between 0 and 1")
    if not 0.0 <= s["warm"][0] <= s["warm"][1] <= 1.0:
        raise ValueError(f"--warm {s['warm'][0]} {s['warm'][1]}: must be fractions 0 ≤ START ≤ END ≤ 1")
    for name in ("crop", "fusion_crop", "s2m_crop"):
        if s[name] % 16:
            raise ValueError(f"--{name.replace('_', '-')} {s[name]}: must be a multiple of 16 (the network's stride)")
        if name == "fusion_crop" and s[name] > min(s["clip_size"]):  # fusion crops without resizing
            raise ValueError(f"--{name.replace('_', '-')} {s[name]}: larger than the generated clips "
                             f"({s['clip_size'][0]}×{s['clip_size'][1]}); use at most {min(s['clip_size'])}")
    return s


def _train_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    from util.precision import cpu_bf16_flags
    return "bfloat16" if cpu_bf16_flags() else "float32"


def _judge_precisions(judge_bf16: str) -> list[str]:
    from util.precision import cpu_bf16_flags
    bf16 = judge_bf16 == "on" or (judge_bf16 == "auto" and bool(cpu_bf16_flags()))
    return ["float32", "bfloat16"] if bf16 else ["float32"]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_clips(settings: dict):
    """The generated training clips (deterministic from ``settings["seed"]``), one at a time."""
    from dataset.synthetic import make_clip
    children = np.random.SeedSequence(settings["seed"]).spawn(settings["train_clips"])
    w, h = settings["clip_size"]
    objects = settings["objects"]
    for i, child in enumerate(children):
        yield make_clip(settings["clip_frames"], w, h, objects[i % len(objects)], seed=child)


def write_training_clips(root: Path, settings: dict) -> None:
    """``root/JPEGImages/<clip>/%05d.jpg`` and ``root/Annotations/<clip>/%05d.png`` of generated clips."""
    from dataset.synthetic import write_image_folder
    from util.palette import save_mask_png
    for i, clip in enumerate(training_clips(settings)):
        name = f"train-{i:04d}"
        write_image_folder(root / "JPEGImages" / name, clip.frames)
        for f in range(clip.num_frames):
            save_mask_png(root / "Annotations" / name / f"{f:05d}.png", clip.labels[f])


def train_propagation(settings: dict, data_root: Path, work: Path, log=print) -> tuple[torch.nn.Module, list]:
    """Train the two-object propagation network; returns (network, learning curve rows)."""
    from torch.utils.data import DataLoader

    from dataset.vos_dataset import VOSDataset
    from model.propagation.train_net import PropagationTrainingNetwork
    from model.propagation_model import PropagationLossComputer
    from train_propagation import PropagationTrainer
    from util.distributed import init_distributed
    from util.trainer import TrainerConfig

    iterations = settings["iterations"]

    class StandinTrainer(PropagationTrainer):
        """BatchNorm in training mode: from random init the running statistics mean nothing yet. From
        ``bn_freeze`` on, the statistics are frozen (with ``bn_freeze_exact``, first recomputed on whole
        training frames), so that the rest of the run trains against the statistics inference uses instead
        of those of a batch of two small crops."""

        frozen = False
        autocast = settings["train_precision"] == "bfloat16"

        def compute(self, data: dict, it: int):
            with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
                losses, outputs = super().compute(data, it)
            return losses, outputs

        def train_mode(self) -> None:
            if self.frozen:
                self.model.eval()
            else:
                self.model.train()

    seed_all(settings["seed"])
    dataset = VOSDataset(data_root / "JPEGImages", data_root / "Annotations", settings["max_jump"], is_bl=False,
                         crop_size=settings["crop"], verbose=False)
    generator = torch.Generator().manual_seed(settings["seed"])
    loader = DataLoader(dataset, settings["batch"], shuffle=True, drop_last=True, num_workers=0,
                        generator=generator)
    _require_batches(loader, "--batch", "training clips")
    network = PropagationTrainingNetwork(single_object=False)
    if settings["zero_init_residual"]:
        zero_init_residual(network)
    if settings["freeze_encoders"]:
        for encoder in (network.rgb_encoder, network.mask_rgb_encoder):
            encoder.requires_grad_(False)
    # fused: one kernel over all 54 M parameters instead of a loop of small ops (0.08 s against 0.38 s a step)
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings["lr"],
                                 weight_decay=1e-7, fused=True)
    if settings.get("schedule", "step") == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * iterations)], 0.1)
    config = TrainerConfig(iterations=iterations, report_interval=10 ** 9, image_interval=10 ** 9,
                           save_interval=10 ** 9, save_prefix=None)
    trainer = StandinTrainer(init_distributed(), network, optimizer, scheduler, config, logger=None)
    # hard-pixel bootstrapping scaled to the short run (--warm fractions; 1 1 = plain CE throughout)
    start_warm, end_warm = settings["warm"]
    trainer.loss_computer = PropagationLossComputer(start_warm=int(start_warm * iterations),
                                                    end_warm=max(int(end_warm * iterations), int(start_warm * iterations) + 1))
    freeze_at = None if settings["bn_freeze"] is None else int(settings["bn_freeze"] * iterations)
    trainer.train_mode()

    curve: list[dict] = []
    start = time.time()
    it, window, inter, union = 0, [], 0.0, 0.0
    report = max(1, min(25, iterations // 10))
    while it < iterations:
        for data in loader:
            if freeze_at is not None and it == freeze_at:
                if settings.get("bn_freeze_exact"):
                    recalibrate_batchnorm(network, settings)
                trainer.frozen = True
                trainer.train_mode()
                log(f"it {it}: BatchNorm statistics frozen")
            trainer.train_iteration(data, it)
            it += 1
            window.append(trainer.loss_history[-1])
            if it % report == 0 or it == iterations:
                row = {"it": it, "loss": float(np.mean(window)), "minutes": (time.time() - start) / 60}
                row["train_iou"] = _train_iou(trainer, data)
                curve.append(row)
                log(f"it {it}/{iterations} loss {row['loss']:.4f} train IoU {row['train_iou']:.3f} "
                    f"({row['minutes']:.1f} min)")
                window = []
                if settings["eval_every"] and it % settings["eval_every"] == 0 and it < iterations:
                    row["held_out_jf_fp32"] = quick_eval(network, settings)
                    log(f"  held-out J&F (fp32) {row['held_out_jf_fp32']:.3f}")
                    trainer.train_mode()
            if it >= iterations or (settings["minutes"] and time.time() - start > 60 * settings["minutes"]):
                break
        if settings["minutes"] and time.time() - start > 60 * settings["minutes"]:
            log(f"time budget of {settings['minutes']} min reached at iteration {it}")
            break
    settings["iterations_done"] = it
    return network, curve


def zero_init_residual(network: torch.nn.Module) -> int:
    """Zero the scale of the last BatchNorm of every ResNet bottleneck (both encoders), so that each block
    starts as the identity and the encoders first pass the stem's colour and texture features through.
    From random initialisation this trains deep ResNets faster (Goyal et al. 2017, torchvision's
    ``zero_init_residual``). Returns the number of blocks changed."""
    from torchvision.models.resnet import Bottleneck

    from model.propagation.modules import BiasedBottleneck
    blocks = [m for m in network.modules() if isinstance(m, (Bottleneck, BiasedBottleneck))]
    with torch.no_grad():
        for block in blocks:
            block.bn3.weight.zero_()
    return len(blocks)


def _train_iou(trainer, data) -> float:
    """IoU of the target object on frames 1 and 2 of the last batch (eval-free: from the last forward)."""
    from model.propagation_model import propagation_forward
    from util.trainer import move_to_device
    with torch.no_grad():
        out = propagation_forward(trainer.model, move_to_device(data, trainer.ctx.device), False)
        gt = data["gt"][:, 1:3, 0] > 0.5
        pred = torch.stack([out["mask_1"][:, 0], out["mask_2"][:, 0]], 1) > 0.5
        return float(((gt & pred).sum() + 1) / ((gt | pred).sum() + 1))


def recalibrate_batchnorm(net: torch.nn.Module, settings: dict) -> None:
    """Precise BatchNorm: replace the running statistics of ``net`` (a
    :class:`~model.propagation.prop_net.PropagationNetwork`, the inference one or the training one at
    ``--bn-freeze``; changed in place, left in eval mode) by exact averages over the training clips at full
    frame size, as inference sees them.

    Why: the statistics gathered while training are exponential averages over batches of two small crops
    taken while the weights were still moving; from random initialisation they lag the final weights and
    misdescribe whole frames. Held-out J&F depends strongly on them (run 3 of the README table: 0.157 with
    the training statistics, 0.219 recalibrated). No weight changes; a forward pass per clip, no gradients.
    """
    from dataset.range_transform import im_normalization
    with _exact_batchnorm_statistics(net):
        for clip in training_clips(settings):
            frames = im_normalization(torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255)
            net.get_query_values(frames)  # key encoder: the clip's frames as one batch
            for t in range(clip.num_frames):
                labels = torch.from_numpy(clip.labels[t]).long()
                masks = torch.stack([labels == k + 1 for k in range(clip.num_objects)]).float().unsqueeze(1)
                net.memorize(frames[t:t + 1], masks)  # value encoder: the frame's objects as one batch


@contextlib.contextmanager
def _exact_batchnorm_statistics(net: torch.nn.Module):
    """Inside: ``net`` in train mode without gradients, every BatchNorm's running statistics reset and
    accumulated as exact averages over the forward calls made (momentum None); after: the momenta
    restored and ``net`` in eval mode."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every forward call weighs the same
    net.train()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()


def inference_network(train_net: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Save ``train_net``'s weights to ``path`` (atomically) and load them back with the strict loader."""
    from model.factory import load_propagation
    from util.fileio import atomic_path
    with atomic_path(path) as tmp:
        torch.save(train_net.state_dict(), tmp)
    return load_propagation(path)


def quick_eval(train_net: torch.nn.Module, settings: dict) -> float:
    with tempfile.TemporaryDirectory() as d:
        net = inference_network(train_net, Path(d) / PROP_FILE)
    if settings["bn_recalibrate"]:
        recalibrate_batchnorm(net, settings)
    return held_out(net, settings, ("float32",)).jf["float32"]


def held_out(net: torch.nn.Module, settings: dict, precisions: Sequence[str]):
    from inference_core.standin_eval import evaluate_propagation, held_out_clips
    clips = held_out_clips(settings["eval_clips"], settings["eval_frames"], tuple(settings["eval_size"]),
                           num_objects=(2, 3))
    return evaluate_propagation(net, clips, precisions)


def _iou(gt: torch.Tensor, pred: torch.Tensor) -> float:
    """IoU of two boolean tensors (1 when both are empty)."""
    return float(((gt & pred).sum() + 1) / ((gt | pred).sum() + 1))


def _require_batches(loader, flag: str, what: str) -> None:
    """One line instead of an endless loop when the samples cannot fill one batch (``drop_last``)."""
    if len(loader) == 0:
        raise ValueError(f"{flag} {loader.batch_size}: more than the {len(loader.dataset)} {what}; "
                         f"lower it or raise --train-clips")


def _fit(trainer, loader, iterations: int, name: str, train_iou, log) -> list[dict]:
    """Run ``trainer`` (a :class:`util.trainer.Trainer` whose ``compute`` keeps ``last_outputs``) for
    ``iterations`` over ``loader``, epoch after epoch; returns the learning curve (loss averaged since the
    previous row, ``train_iou(data, outputs)`` of the last batch)."""
    trainer.train_mode()
    curve: list[dict] = []
    start = time.time()
    it, window = 0, []
    report = max(1, min(25, iterations // 10))
    while it < iterations:
        for data in loader:
            trainer.train_iteration(data, it)
            it += 1
            window.append(trainer.loss_history[-1])
            if it % report == 0 or it == iterations:
                row = {"it": it, "loss": float(np.mean(window)), "minutes": (time.time() - start) / 60,
                       "train_iou": train_iou(data, trainer.last_outputs)}
                curve.append(row)
                log(f"{name} it {it}/{iterations} loss {row['loss']:.4f} train IoU {row['train_iou']:.3f} "
                    f"({row['minutes']:.1f} min)")
                window = []
            if it >= iterations:
                break
    return curve


def write_fusion_data(prop_net: torch.nn.Module, fusion_root: Path, settings: dict) -> int:
    """``fusion_root/standin/<clip>/<ref>/<label>/<frame>.png``: the training clips propagated by the
    propagation stand-in alone from every ``fusion_separation``-th frame (``generate_fusion.py``'s DAVIS
    pass). Returns the number of reference passes."""
    from dataset.range_transform import im_normalization
    from generate_fusion import write_video_passes
    passes = 0
    for i, clip in enumerate(training_clips(settings)):
        rgb = im_normalization(torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255)
        labels = torch.from_numpy(clip.labels).long()
        gt = torch.stack([labels == k + 1 for k in range(clip.num_objects)]).float().unsqueeze(2)  # K×T×1×H×W
        passes += write_video_passes(prop_net, rgb, gt, list(range(1, clip.num_objects + 1)),
                                     fusion_root / "standin" / f"train-{i:04d}", settings["fusion_separation"],
                                     settings["fusion_mem_freq"])
    return passes


def train_fusion(settings: dict, data_root: Path, prop_path: Path, log=print) -> tuple[torch.nn.Module, list]:
    """Train FusionNet on fusion data of the propagation stand-in ``prop_path`` (``train.py``'s trainer,
    loss and dataset); returns (network in eval mode, learning curve rows)."""
    from torch.utils.data import DataLoader

    from dataset.fusion_dataset import FusionDataset
    from model.factory import load_attention_reader, load_propagation
    from model.fusion_net import FusionNet
    from train import FusionTrainer
    from util.distributed import init_distributed
    from util.trainer import TrainerConfig

    iterations = settings["fusion_iterations"]
    t0 = time.time()
    passes = write_fusion_data(load_propagation(prop_path), data_root / "fusion", settings)
    log(f"fusion data: {passes} reference passes ({time.time() - t0:.0f} s)")

    class StandinFusionTrainer(FusionTrainer):
        last_outputs: dict = {}

        def compute(self, data: dict, it: int):
            losses, outputs = super().compute(data, it)
            self.last_outputs = outputs
            return losses, outputs

    seed_all(settings["seed"])
    dataset = FusionDataset(data_root / "JPEGImages", data_root / "Annotations", data_root / "fusion",
                            crop_size=settings["fusion_crop"], verbose=False)
    generator = torch.Generator().manual_seed(settings["seed"])
    loader = DataLoader(dataset, settings["fusion_batch"], shuffle=True, drop_last=True, num_workers=0,
                        generator=generator)
    _require_batches(loader, "--fusion-batch", "fusion samples made from the training clips")
    network = FusionNet()
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings["fusion_lr"],
                                 weight_decay=1e-7)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * iterations)], 0.1)
    config = TrainerConfig(iterations=iterations, report_interval=10 ** 9, image_interval=10 ** 9,
                           save_interval=10 ** 9, save_prefix=None)
    trainer = StandinFusionTrainer(init_distributed(), network, load_attention_reader(prop_path), optimizer,
                                   scheduler, config, logger=None)

    def train_iou(data: dict, outputs: dict) -> float:
        return _iou(torch.cat([data["gt"], data["gt2"]]) > 0.5,
                    torch.cat([outputs["mask"][:, 1:2], outputs["mask"][:, 2:3]]) > 0.5)

    curve = _fit(trainer, loader, iterations, "fusion", train_iou, log)
    network.eval()
    return network, curve


def fusion_held_out(prop_net: torch.nn.Module, fuse_net: torch.nn.Module, settings: dict,
                    precisions: Sequence[str]):
    from inference_core.standin_eval import evaluate_fusion, held_out_clips
    clips = held_out_clips(settings["eval_clips"], settings["eval_frames"], tuple(settings["eval_size"]),
                           num_objects=(2, 3))
    return evaluate_fusion(prop_net, fuse_net, clips, precisions)


def write_s2m_images(root: Path, settings: dict) -> int:
    """``root/<clip>-<frame>-<object>.jpg`` + ``.png`` (0/255): every ``s2m_frame_step``-th frame of the
    training clips, once per object of at least 100 pixels there (the flat static layout that
    :class:`dataset.s2m_dataset.S2MStaticDataset` reads with method 1). Returns the number of images."""
    import cv2
    root.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, clip in enumerate(training_clips(settings)):
        for t in range(0, clip.num_frames, settings["s2m_frame_step"]):
            for k in range(1, clip.num_objects + 1):
                mask = (clip.labels[t] == k).astype(np.uint8) * 255
                if int((mask > 0).sum()) < 100:
                    continue
                stem = root / f"train-{i:04d}-{t:03d}-{k}"
                if not (cv2.imwrite(str(stem.with_suffix(".jpg")), cv2.cvtColor(clip.frames[t], cv2.COLOR_RGB2BGR))
                        and cv2.imwrite(str(stem.with_suffix(".png")), mask)):
                    raise OSError(f"{stem}: could not write the S2M training image")
                count += 1
    return count


def train_s2m(settings: dict, data_root: Path, log=print) -> tuple[torch.nn.Module, list]:
    """Train the S2M DeepLabV3+ from random init (``train_s2m.py``'s trainer, loss and dataset) on objects of
    the training clips; returns (network in eval mode, BatchNorm statistics recomputed; learning curve)."""
    from torch.utils.data import DataLoader

    from dataset.s2m_dataset import S2MStaticDataset
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    from train_s2m import S2MTrainer
    from util.distributed import init_distributed
    from util.trainer import TrainerConfig

    iterations = settings["s2m_iterations"]
    images = write_s2m_images(data_root / "s2m", settings)
    log(f"S2M: {images} training images")

    class StandinS2MTrainer(S2MTrainer):
        last_outputs: dict = {}
        autocast = settings["train_precision"] == "bfloat16"

        def compute(self, data: dict, it: int):
            with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
                losses, outputs = super().compute(data, it)
            self.last_outputs = outputs
            return losses, outputs

    seed_all(settings["seed"])
    dataset = S2MStaticDataset(data_root / "s2m", method=1, crop_size=settings["s2m_crop"], verbose=False)
    generator = torch.Generator().manual_seed(settings["seed"])
    loader = DataLoader(dataset, settings["s2m_batch"], shuffle=True, drop_last=True, num_workers=0,
                        generator=generator)
    _require_batches(loader, "--s2m-batch", "S2M images made from the training clips")
    network = deeplabv3plus_resnet50(num_classes=1, output_stride=16)
    if settings["zero_init_residual"]:
        zero_init_residual(network)
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings["s2m_lr"],
                                 weight_decay=1e-7)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * iterations)], 0.1)
    config = TrainerConfig(iterations=iterations, report_interval=10 ** 9, image_interval=10 ** 9,
                           save_interval=10 ** 9, save_prefix=None)
    trainer = StandinS2MTrainer(init_distributed(), network, optimizer, scheduler, config, logger=None)
    curve = _fit(trainer, loader, iterations, "S2M",
                 lambda data, outputs: _iou(data["gt"] > 0.5, outputs["mask"][:, 1:2] > 0.5), log)
    if settings["bn_recalibrate"]:
        _recalibrate_s2m_batchnorm(network, dataset, settings)
    network.eval()
    return network, curve


def _recalibrate_s2m_batchnorm(net: torch.nn.Module, dataset, settings: dict, passes: int = 2) -> None:
    """Precise BatchNorm for S2M (see :func:`recalibrate_batchnorm`): exact averages over ``passes`` sweeps
    of the training samples (random crops and scribbles), no weight changes."""
    from model.s2m_model import s2m_forward
    seed_all(settings["seed"] + 1)
    loader = torch.utils.data.DataLoader(dataset, settings["s2m_batch"], shuffle=True, drop_last=True)
    with _exact_batchnorm_statistics(net):
        for _ in range(passes):
            for data in loader:
                s2m_forward(net, data)


def s2m_held_out(s2m_net: torch.nn.Module, settings: dict, precisions: Sequence[str]):
    from inference_core.standin_eval import evaluate_s2m, held_out_clips, s2m_cases
    clips = held_out_clips(settings["eval_clips"], settings["eval_frames"], tuple(settings["eval_size"]),
                           num_objects=(2, 3))
    return evaluate_s2m(s2m_net, s2m_cases(clips), precisions)


def run(settings: dict, out: Path, log=print) -> dict:
    """Train, evaluate and write the stand-ins under ``out``; returns the report (also in standins.json).

    ``settings["only"]``: None (both), ``"propagation"``, or ``"fusion"`` (on ``out``'s propagation
    stand-in, whose report entry is kept; with ``"propagation"`` a fusion entry already there is dropped,
    since it was made on the previous propagation stand-in)."""
    from model.factory import load_propagation
    from util.fileio import atomic_path, atomic_write_text
    from util.precision import cpu_bf16_flags
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    precisions = tuple(settings.get("judge_precisions", ("float32", "bfloat16")))
    report = {"settings": settings, "propagation": None, "fusion": None, "s2m": None}
    only = settings.get("only")
    if only is not None and (out / REPORT_FILE).is_file():
        # keep the entries of the stand-ins this run does not make
        previous = json.loads((out / REPORT_FILE).read_text())
        report.update({name: previous.get(name) for name in ("propagation", "fusion", "s2m") if name != only})
        if only == "propagation":
            report["fusion"] = None  # made on the propagation stand-in this run replaces
    if only == "fusion":
        _require_propagation_standin(out)
    with tempfile.TemporaryDirectory(prefix="standin-clips-") as tmp:
        data_root = Path(tmp) / "clips"
        write_training_clips(data_root, settings)
        log(f"{settings['train_clips']} training clips written ({time.time() - t0:.0f} s)")
        if only in (None, "propagation"):
            network, curve = train_propagation(settings, data_root, Path(tmp), log)
            if settings["bn_recalibrate"]:
                recalibrate_batchnorm(network, settings)  # same modules and buffers as the inference network
                log("BatchNorm statistics recalibrated on the training clips")
            net = inference_network(network, out / PROP_FILE)
            result = held_out(net, settings, precisions)
            report["propagation"] = {"file": PROP_FILE, "settings": settings, "curve": curve, "held_out": result.as_dict()}
            if only == "propagation" and (out / FUSION_FILE).exists():
                (out / FUSION_FILE).unlink()  # trained on the replaced propagation stand-in: no longer valid
                log(f"removed {out / FUSION_FILE}: it was made on the previous propagation stand-in")
            log(f"held-out J&F: " + ", ".join(f"{p} {v:.3f}" for p, v in result.jf.items())
                + f"; {_bf16_note(result)}")
        if only in (None, "fusion"):
            fuse_net, fusion_curve = train_fusion(settings, data_root, out / PROP_FILE, log)
            with atomic_path(out / FUSION_FILE) as tmp_file:
                torch.save(fuse_net.state_dict(), tmp_file)
            from model.factory import load_fusion
            fuse_net = load_fusion(out / FUSION_FILE)  # what users load: the strict loader
            fusion = fusion_held_out(load_propagation(out / PROP_FILE), fuse_net, settings, precisions)
            report["fusion"] = {"file": FUSION_FILE, "settings": settings, "curve": fusion_curve, "held_out": fusion.as_dict()}
            log("held-out round-2 J&F with fusion: " + ", ".join(f"{p} {v:.3f}" for p, v in fusion.jf.items())
                + f" (without: round 1 kept {fusion.baselines['round1']:.3f}, replaced "
                  f"{fusion.baselines['replace']:.3f}); {_bf16_note(fusion)}")
        if only in (None, "s2m"):
            s2m_net, s2m_curve = train_s2m(settings, data_root, log)
            with atomic_path(out / S2M_FILE) as tmp_file:
                torch.save(s2m_net.state_dict(), tmp_file)
            from model.factory import load_s2m
            s2m = s2m_held_out(load_s2m(out / S2M_FILE), settings, precisions)
            report["s2m"] = {"file": S2M_FILE, "settings": settings, "curve": s2m_curve, "held_out": s2m.as_dict()}
            log("held-out S2M IoU: " + ", ".join(f"{p} {v:.3f}" for p, v in s2m.jf.items())
                + f" (first / correct: {s2m.per_clip['float32'][0]:.3f} / {s2m.per_clip['float32'][1]:.3f}; "
                  f"previous masks {s2m.baselines['first']:.3f} / {s2m.baselines['correct']:.3f}); "
                  f"{_bf16_note(s2m)}")
    report.update({"cpu_native_bf16": list(cpu_bf16_flags()), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "minutes": (time.time() - t0) / 60})
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=1))
    log(f"wrote the stand-ins and {out / REPORT_FILE}")
    return report


def _bf16_note(result) -> str:
    if "bfloat16" not in result.agreement:
        return "bf16 not judged (no native bf16 on this CPU; --judge-bf16 on judges it emulated)"
    return f"bf16 pixel agreement with fp32 {result.agreement['bfloat16']:.4f}"


def _require_propagation_standin(out: Path) -> None:
    if not (out / PROP_FILE).is_file():
        raise ValueError(f"--only fusion: {out / PROP_FILE} not found; make the propagation stand-in first "
                         f"(--only propagation, or no --only)")


def _run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    if settings["only"] == "fusion":
        _require_propagation_standin(Path(args.out).expanduser())
    out = cli.output_dir("--out", args.out)
    if args.threads:
        cli.positive_int("--threads", args.threads)
        torch.set_num_threads(args.threads)
    run(settings, out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli(_run, build_parser().parse_args(argv), (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
