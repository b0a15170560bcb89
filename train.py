"""Train the MiVOS difference-aware fusion module.

Stage 0 (BL30K) then stage 1 (DAVIS 2017 train), each on fusion data made by ``generate_fusion.py``::

    torchrun --nproc_per_node=2 train.py --stage 0 --id retrain_s0 --load_prop saves/propagation_model.pth
    torchrun --nproc_per_node=2 train.py --stage 1 --id retrain_s012 --load_prop saves/propagation_model.pth \
        --load_network saves/<s0 run>/<s0 run>_30000.pth

A plain ``python train.py ...`` trains in one process. Checkpoints: ``saves/<run>/<run>_<it>.pth``
(FusionNet weights, loadable as ``fusion.pth``) and ``saves/<run>/<run>_checkpoint.pth`` (resume with
``--load_model``). Options: ``python train.py -h`` and :mod:`util.hyper_para`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from dataset.fusion_dataset import FRAMES_LAYOUT, FUSION_LAYOUT, MASKS_LAYOUT, FusionDataset
from dataset.layout import DatasetError, require_dir
from model.factory import load_attention_reader
from model.fusion_model import fusion_forward
from model.fusion_net import FusionNet
from model.losses import IOU_HOOKS, FusionLossComputer
from util.checkpoint import CheckpointError
from util.distributed import DistContext, cleanup_distributed, init_distributed, seed_everything
from util.hyper_para import HyperParameters, parse_fusion_args
from util.image_grid import captioned_grid, image_tile, mask_tile
from util.logger import TensorboardLogger
from util.train_setup import fit_and_close, make_loader, make_run_logger, script_main
from util.trainer import Trainer, TrainerConfig

GRID_TILE = (320, 320)
GRID_SAMPLES = 4


class FusionTrainer(Trainer):
    """FusionNet trained against the frozen attention reader (``AttentionReadNetwork``)."""

    def __init__(self, ctx: DistContext, network: torch.nn.Module, attention_reader: torch.nn.Module,
                 optimizer, scheduler, config: TrainerConfig, logger: TensorboardLogger | None):
        super().__init__(ctx, network, optimizer, scheduler, config, logger, hooks=IOU_HOOKS)
        self.attention_reader = attention_reader.to(ctx.device).eval()
        self.loss_computer = FusionLossComputer(config.iterations)

    def train_mode(self) -> None:
        # Both networks stay in eval mode, as the original ("skip BN"); FusionNet has no BN/dropout.
        self.model.eval()
        self.attention_reader.eval()

    def compute(self, data: dict, it: int):
        outputs = fusion_forward(self.model, self.attention_reader, data)
        losses = self.loss_computer.compute({**data, **outputs}, it)
        return losses, outputs

    def log_images(self, data: dict, outputs: dict, it: int) -> None:
        n = min(GRID_SAMPLES, data["rgb"].shape[0])
        rows: dict[str, list] = {name: [] for name in ("RGB", "S11", "S21", "S12", "S22", "Pos Attn1", "Neg Attn1",
                                                        "Pos Attn2", "Neg Attn2", "MSK1", "MSK2", "GT1", "GT2")}
        for i in range(n):
            rows["RGB"].append(image_tile(data["rgb"][i], GRID_TILE))
            for name, key in (("S11", "seg1"), ("S21", "seg2"), ("S12", "seg12"), ("S22", "seg22"),
                              ("GT1", "gt"), ("GT2", "gt2")):
                rows[name].append(mask_tile(data[key][i], GRID_TILE))
            for obj in (1, 2):
                attn = outputs[f"attn{obj}"][i]
                rows[f"Pos Attn{obj}"].append(mask_tile(attn[0], GRID_TILE))
                rows[f"Neg Attn{obj}"].append(mask_tile(attn[1], GRID_TILE))
                rows[f"MSK{obj}"].append(mask_tile(outputs["mask"][i, obj], GRID_TILE))
        self.logger.log_image("train/pairs", captioned_grid(rows, GRID_TILE), it)


def data_paths(para: HyperParameters) -> tuple[Path, Path, Path, str]:
    """(frames, annotations, fusion data, layout description) of the chosen stage."""
    if para["stage"] == 0:
        root = Path(para["bl_root"]).expanduser()
        return (root / "JPEGImages", root / "Annotations", Path(para["fusion_bl_root"]).expanduser(),
                "stage 0 reads --bl_root/{JPEGImages,Annotations}/<video>/ and --fusion_bl_root")
    root = Path(para["davis_root"]).expanduser() / "2017" / "trainval"
    return (root / "JPEGImages" / "480p", root / "Annotations" / "480p", Path(para["fusion_root"]).expanduser(),
            "stage 1 reads --davis_root/2017/trainval/{JPEGImages,Annotations}/480p/<video>/ and --fusion_root")


def check_inputs(para: HyperParameters) -> None:
    """Fail fast, with one line, on a missing propagation checkpoint or data root."""
    if not para["load_prop"]:
        raise CheckpointError("--load_prop is required: the fusion module trains on a pre-trained propagation "
                              "model (e.g. saves/propagation_model.pth from download_model.py)")
    prop = Path(para["load_prop"]).expanduser()
    if not prop.is_file():
        raise CheckpointError(f"{prop}: propagation checkpoint not found (--load_prop); expected the propagation "
                              "model's state dict, e.g. saves/propagation_model.pth from download_model.py")
    frames, masks, fusion, where = data_paths(para)
    require_dir(frames, "frame folder", f"{FRAMES_LAYOUT} ({where})")
    require_dir(masks, "annotation folder", f"{MASKS_LAYOUT} ({where})")
    require_dir(fusion, "fusion data folder", f"{FUSION_LAYOUT} ({where})")


def run(para: HyperParameters) -> FusionTrainer:
    """Train with parsed options; return the trainer (``trainer.iteration`` = the iteration reached)."""
    check_inputs(para)
    ctx = init_distributed()
    try:
        torch.backends.cudnn.benchmark = True
        seed_everything()
        print(f"I am rank {ctx.rank} in the world of {ctx.world_size} ({ctx.device})!", flush=True)

        logger, save_prefix = make_run_logger(para, ctx)

        network = FusionNet().to(ctx.device)  # before the optimizer is built over its parameters
        attention_reader = load_attention_reader(para["load_prop"], ctx.device)
        optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=para["lr"],
                                     weight_decay=1e-7)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, para["steps"], para["gamma"])
        config = TrainerConfig(iterations=para["iterations"], report_interval=para["report_interval"],
                               image_interval=para["image_interval"], save_interval=para["save_interval"],
                               save_prefix=save_prefix)
        trainer = FusionTrainer(ctx, network, attention_reader, optimizer, scheduler, config, logger)

        start_it = trainer.load_checkpoint(para["load_model"]) if para["load_model"] else 0
        if para["load_network"]:
            trainer.load_network(para["load_network"])

        frames, masks, fusion, _ = data_paths(para)
        dataset = FusionDataset(frames, masks, fusion, crop_size=para["crop_size"], verbose=ctx.is_main)
        loader, sampler = make_loader(dataset, para, ctx)
        return fit_and_close(trainer, loader, sampler, start_it, ctx, logger)
    finally:
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("train.py", parse_fusion_args, run, (CheckpointError, DatasetError), argv)


if __name__ == "__main__":
    sys.exit(main())
