"""Train the propagation module (Mask-Propagation ``train.py``): stage 0 → 1 → 2 (s012) or 0 → 2 (s02)::

    torchrun --nproc_per_node=2 train_propagation.py --stage 0 --id retrain_s0
    torchrun --nproc_per_node=2 train_propagation.py --stage 1 --id retrain_s01 \
        --load_network saves/<s0 run>/<s0 run>_300000.pth
    torchrun --nproc_per_node=2 train_propagation.py --stage 2 --id retrain_s012 \
        --load_network saves/<s01 run>/<s01 run>_500000.pth

Stage 0 trains a single-object network on pseudo-videos made from static images; loading its weights into
stage 1/2 adds the "others" input channel to the mask encoder. The result loads as
``saves/propagation_model.pth``. Checkpoints: ``saves/<run>/<run>_<it>.pth`` (weights) and
``saves/<run>/<run>_checkpoint.pth`` (resume with ``--load_model``). Options: ``-h`` and :mod:`util.hyper_para`.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset

from dataset.layout import DatasetError, DatasetLayoutError, require_dir, require_file
from dataset.skip_curriculum import SkipCurriculumSampler
from dataset.static_dataset import StaticTransformDataset
from dataset.vos_dataset import VOSDataset
from model.losses import IOU_HOOKS
from model.propagation.train_net import PropagationTrainingNetwork, single_to_multi_object
from model.factory import load_imagenet_resnet50
from model.propagation_model import PropagationLossComputer, propagation_forward
from util import cli
from util.checkpoint import CheckpointError, read_state_dict
from util.distributed import DistContext, cleanup_distributed, init_distributed, seed_everything
from util.hyper_para import HyperParameters, parse_propagation_args
from util.image_grid import captioned_grid, image_tile, mask_tile
from util.logger import TensorboardLogger
from util.train_setup import fit_and_close, make_loader, make_run_logger, script_main
from util.trainer import Trainer, TrainerConfig

GRID_TILE = (384, 384)
GRID_SAMPLES = 4
# stage 0: (folder, layout method, repeats) — FSS-1000, DUTS, ECSSD once; the high-resolution sets ×5
STATIC_SETS = (("fss", 0, 1), ("DUTS-TR", 1, 1), ("DUTS-TE", 1, 1), ("ecssd", 1, 1), ("BIG_small", 1, 5),
               ("HRSOD_small", 1, 5))
DAVIS_REPEATS = 5
YOUTUBE_SKIP_DIVISOR = 5


class PropagationTrainer(Trainer):
    """With ``frozen_bn`` (the original's choice: its encoders start from ImageNet) the network trains in
    eval mode: BatchNorm statistics frozen, BN affine parameters still trained. Without (random
    initialisation) BatchNorm normalises with batch statistics and updates its running statistics: frozen
    statistics of an untrained network are meaningless (mean 0, variance 1), activations grow through the
    50 layers, and training diverges instead of starting to segment."""

    def __init__(self, ctx: DistContext, network: PropagationTrainingNetwork, optimizer, scheduler,
                 config: TrainerConfig, logger: TensorboardLogger | None, frozen_bn: bool = True):
        super().__init__(ctx, network, optimizer, scheduler, config, logger, hooks=IOU_HOOKS)
        self.single_object = network.single_object
        self.loss_computer = PropagationLossComputer()
        self.frozen_bn = frozen_bn

    def train_mode(self) -> None:
        if self.frozen_bn:
            self.model.eval()
        else:
            self.model.train()

    def compute(self, data: dict, it: int):
        outputs = propagation_forward(self.model, data, self.single_object)
        return self.loss_computer.compute({**data, **outputs}, it), outputs

    def load_network(self, path: str | os.PathLike) -> None:
        """Weights only; single-object (stage 0) weights gain the "others" channel for stages 1 and 2."""
        state = read_state_dict(path)
        if not self.single_object:
            state = single_to_multi_object(state)
        try:
            self.network.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(f"{path}: does not fit the propagation network ({first}); expected a "
                                  "propagation .pth (a previous stage or propagation_model.pth)") from None
        print(f"Network weights loaded from {path}.", flush=True)

    def log_images(self, data: dict, outputs: dict, it: int) -> None:
        # one column per (sample, frame): images, ground truth, and the prediction (frame 0 = its ground truth)
        n = min(GRID_SAMPLES, data["rgb"].shape[0])
        rows: dict[str, list] = {"RGB": [], "GT": [], "Pred": []}
        for i in range(n):
            predictions = [data["gt"][i, 0], outputs["mask_1"][i, 0], outputs["mask_2"][i, 0]]
            for f in range(3):
                rows["RGB"].append(image_tile(data["rgb"][i, f], GRID_TILE))
                rows["GT"].append(mask_tile(data["gt"][i, f], GRID_TILE))
                rows["Pred"].append(mask_tile(predictions[f], GRID_TILE))
        self.logger.log_image("train/pairs", captioned_grid(rows, GRID_TILE), it)


def _read_subset(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build_datasets(para: HyperParameters, verbose: bool) -> tuple[Dataset, list[tuple[Dataset, int]]]:
    """The stage's training set and the VOS datasets whose ``max_jump`` follows the skip curriculum."""
    crop = para["crop_size"]
    stage = para["stage"]
    if stage == 0:
        root = Path(para["static_root"]).expanduser()
        parts: list[Dataset] = []
        for name, method, repeats in STATIC_SETS:
            ds = StaticTransformDataset(require_dir(root / name, "static image set",
                                                    "--static_root/{fss,DUTS-TR,DUTS-TE,ecssd,BIG_small,HRSOD_small}"),
                                        method, crop_size=crop, verbose=verbose)
            parts += [ds] * repeats
        return ConcatDataset(parts), []
    if stage == 1:
        root = Path(para["bl_root"]).expanduser()
        bl = VOSDataset(root / "JPEGImages", root / "Annotations", 5, is_bl=True, crop_size=crop, verbose=verbose)
        return bl, [(bl, 1)]
    davis = Path(para["davis_root"]).expanduser() / "2017" / "trainval"
    davis_subset = _read_subset(require_file(davis / "ImageSets" / "2017" / "train.txt", "DAVIS train list",
                                             "--davis_root/2017/trainval/ImageSets/2017/train.txt"))
    davis_ds = VOSDataset(davis / "JPEGImages" / "480p", davis / "Annotations" / "480p", 5, is_bl=False,
                          subset=davis_subset, crop_size=crop, verbose=verbose)
    yv = Path(para["yv_root"]).expanduser() / "train_480p"
    yv_subset = None
    if para["yv_subset"]:
        yv_subset = _read_subset(require_file(para["yv_subset"], "YouTube-VOS subset list", "one video per line"))
    yv_ds = VOSDataset(yv / "JPEGImages", yv / "Annotations", 5 // YOUTUBE_SKIP_DIVISOR, is_bl=False,
                       subset=yv_subset, crop_size=crop, verbose=verbose)
    return ConcatDataset([davis_ds] * DAVIS_REPEATS + [yv_ds]), [(davis_ds, 1), (yv_ds, YOUTUBE_SKIP_DIVISOR)]


def initial_weights(para: HyperParameters) -> Path | None:
    """The ImageNet ResNet-50 file the encoders start from, or None (weights come from --load_network /
    --load_model, or --imagenet none). A missing file is one ``error: --imagenet …`` line."""
    if para["load_network"] or para["load_model"] or str(para["imagenet"]).lower() == "none":
        return None
    return cli.input_file("--imagenet", para["imagenet"], "ImageNet ResNet-50 weights",
                          "the encoders start from ImageNet as in the original: run `python download_model.py "
                          "--pretrained`, give its path, or pass --imagenet none to train from random initialisation")


def run(para: HyperParameters) -> PropagationTrainer:
    """Train with parsed options; return the trainer (``trainer.iteration`` = the iteration reached)."""
    imagenet = initial_weights(para)  # before any work: a missing file is one line, at once
    ctx = init_distributed()
    try:
        torch.backends.cudnn.benchmark = bool(para["benchmark"])
        seed_everything()
        print(f"I am rank {ctx.rank} in the world of {ctx.world_size} ({ctx.device})!", flush=True)
        dataset, vos_datasets = build_datasets(para, verbose=ctx.is_main)
        logger, save_prefix = make_run_logger(para, ctx)

        network = PropagationTrainingNetwork(single_object=para["stage"] == 0)
        if imagenet is not None:
            network.init_encoders_from_imagenet(load_imagenet_resnet50(imagenet))
            if ctx.is_main:
                print(f"Encoders initialised from {imagenet} (ImageNet).", flush=True)
        # a resumed run (--load_model) keeps the BatchNorm mode it started with: pass the same --imagenet
        random_init = str(para["imagenet"]).lower() == "none" and not para["load_network"]
        if random_init and ctx.is_main:
            print("Encoders start from random initialisation (--imagenet none): BatchNorm uses batch statistics "
                  "while training.", flush=True)
        optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=para["lr"],
                                     weight_decay=1e-7)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, para["steps"], para["gamma"])
        config = TrainerConfig(iterations=para["iterations"], report_interval=para["report_interval"],
                               image_interval=para["image_interval"], save_interval=para["save_interval"],
                               save_prefix=save_prefix)
        trainer = PropagationTrainer(ctx, network, optimizer, scheduler, config, logger, frozen_bn=not random_init)
        start_it = trainer.load_checkpoint(para["load_model"]) if para["load_model"] else 0
        if para["load_network"]:
            trainer.load_network(para["load_network"])

        sampler = None
        if vos_datasets:
            sampler = SkipCurriculumSampler(dataset, vos_datasets, para["stage"], total_epochs=1,
                                            num_replicas=ctx.world_size, rank=ctx.rank, verbose=ctx.is_main)
        loader, sampler = make_loader(dataset, para, ctx, sampler)
        if vos_datasets and len(loader) > 0:
            sampler.total_epochs = math.ceil(para["iterations"] / len(loader))
        return fit_and_close(trainer, loader, sampler, start_it, ctx, logger)
    finally:
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("train_propagation.py", parse_propagation_args, run, (CheckpointError, DatasetError, DatasetLayoutError), argv)


if __name__ == "__main__":
    sys.exit(main())
