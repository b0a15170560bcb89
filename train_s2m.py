"""Train the scribble-to-mask (S2M) module (Scribble-to-Mask ``train.py``)::

    torchrun --nproc_per_node=2 train_s2m.py --id s2m --load_deeplab <best_deeplabv3plus_resnet50_voc_os16.pth>

Data: 2 × the static sets (``--static_root``: fss, DUTS-TR, DUTS-TE, ecssd, 5 × (BIG_small + HRSOD_small)) + LVIS
(``--lvis_root/lvis_v1_train.json`` + ``train2017/``). The network trains with batch-norm in train mode
(SyncBatchNorm under multi-GPU CUDA). The result loads as ``saves/s2m.pth``. Checkpoints:
``saves/<run>/<run>_<it>.pth`` and ``saves/<run>/<run>_checkpoint.pth`` (resume with ``--load_model``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from dataset.layout import DatasetError, DatasetLayoutError, require_dir
from dataset.lvis import LVIS
from dataset.s2m_dataset import LVISTransformDataset, S2MStaticDataset
from model.losses import IOU_HOOKS
from model.s2m.s2m_network import deeplabv3plus_resnet50
from model.s2m.surgery import deeplab_to_s2m_state
from model.s2m_model import S2MLossComputer, s2m_forward
from util.checkpoint import CheckpointError, read_state_dict
from util.distributed import DistContext, cleanup_distributed, init_distributed, seed_everything
from util.hyper_para import HyperParameters, parse_s2m_args
from util.image_grid import captioned_grid, image_tile, mask_tile
from util.logger import TensorboardLogger
from util.train_setup import fit_and_close, make_loader, make_run_logger, script_main
from util.trainer import Trainer, TrainerConfig

GRID_TILE = (384, 384)
GRID_SAMPLES = 4
STATIC_SETS = (("fss", 0, 1), ("DUTS-TR", 1, 1), ("DUTS-TE", 1, 1), ("ecssd", 1, 1), ("BIG_small", 1, 5),
               ("HRSOD_small", 1, 5))
STATIC_REPEATS = 2


class S2MTrainer(Trainer):
    """DeepLabV3+ in train mode (batch-norm statistics updated, unlike the other two modules)."""

    def __init__(self, ctx: DistContext, network: nn.Module, optimizer, scheduler, config: TrainerConfig,
                 logger: TensorboardLogger | None):
        super().__init__(ctx, network, optimizer, scheduler, config, logger, hooks=IOU_HOOKS)
        self.loss_computer = S2MLossComputer()

    def compute(self, data: dict, it: int):
        outputs = s2m_forward(self.model, data)
        return self.loss_computer.compute({**data, **outputs}, it), outputs

    def log_images(self, data: dict, outputs: dict, it: int) -> None:
        n = min(GRID_SAMPLES, data["rgb"].shape[0])
        rows: dict[str, list] = {"RGB": [], "Prev": [], "Pos": [], "Neg": [], "Pred": [], "GT": []}
        for i in range(n):
            rows["RGB"].append(image_tile(data["rgb"][i], GRID_TILE))
            rows["Prev"].append(mask_tile(data["seg"][i], GRID_TILE))
            rows["Pos"].append(mask_tile(data["srb"][i, 0], GRID_TILE))
            rows["Neg"].append(mask_tile(data["srb"][i, 1], GRID_TILE))
            rows["Pred"].append(mask_tile(outputs["mask"][i, 1], GRID_TILE))
            rows["GT"].append(mask_tile(data["gt"][i], GRID_TILE))
        self.logger.log_image("train/pairs", captioned_grid(rows, GRID_TILE), it)

    def load_deeplab(self, path: str | os.PathLike) -> None:
        """Initialise from a DeepLabV3+ ResNet-50 checkpoint (``['model_state']``), extending it to 6 input
        channels and one output logit (:func:`model.s2m.surgery.deeplab_to_s2m_state`)."""
        state = deeplab_to_s2m_state(read_state_dict(path), self.network.state_dict())
        try:
            self.network.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(f"{path}: does not fit DeepLabV3+ ResNet-50 ({first}); --load_deeplab expects "
                                  "VainF's deeplabv3plus_resnet50 checkpoint (output stride 16)") from None
        print(f"DeepLabV3+ weights loaded from {path} (stem extended to 6 channels).", flush=True)


def build_dataset(para: HyperParameters, verbose: bool) -> Dataset:
    crop = para["crop_size"]
    root = Path(para["static_root"]).expanduser()
    static: list[Dataset] = []
    for name, method, repeats in STATIC_SETS:
        folder = require_dir(root / name, "static image set",
                             "--static_root/{fss,DUTS-TR,DUTS-TE,ecssd,BIG_small,HRSOD_small}")
        static += [S2MStaticDataset(folder, method, crop_size=crop, verbose=verbose)] * repeats
    lvis_root = Path(para["lvis_root"]).expanduser()
    lvis = LVISTransformDataset(lvis_root / "train2017", LVIS(lvis_root / "lvis_v1_train.json"), crop_size=crop,
                                verbose=verbose)
    return ConcatDataset(static * STATIC_REPEATS + [lvis])


def run(para: HyperParameters) -> S2MTrainer:
    """Train with parsed options; return the trainer (``trainer.iteration`` = the iteration reached)."""
    ctx = init_distributed()
    try:
        torch.backends.cudnn.benchmark = True
        seed_everything()
        print(f"I am rank {ctx.rank} in the world of {ctx.world_size} ({ctx.device})!", flush=True)
        dataset = build_dataset(para, verbose=ctx.is_main)
        logger, save_prefix = make_run_logger(para, ctx)

        network: nn.Module = deeplabv3plus_resnet50(num_classes=1, output_stride=16)
        if ctx.initialized and ctx.device.type == "cuda":
            # batch statistics over all GPUs (SyncBatchNorm keeps the BatchNorm state-dict keys)
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=para["lr"],
                                     weight_decay=1e-7)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, para["steps"], para["gamma"])
        config = TrainerConfig(iterations=para["iterations"], report_interval=para["report_interval"],
                               image_interval=para["image_interval"], save_interval=para["save_interval"],
                               save_prefix=save_prefix)
        trainer = S2MTrainer(ctx, network, optimizer, scheduler, config, logger)
        start_it = trainer.load_checkpoint(para["load_model"]) if para["load_model"] else 0
        if para["load_network"]:
            trainer.load_network(para["load_network"])
        if para["load_deeplab"]:
            trainer.load_deeplab(para["load_deeplab"])

        loader, sampler = make_loader(dataset, para, ctx)
        return fit_and_close(trainer, loader, sampler, start_it, ctx, logger)
    finally:
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("train_s2m.py", parse_s2m_args, run, (CheckpointError, DatasetError, DatasetLayoutError), argv)


if __name__ == "__main__":
    sys.exit(main())
