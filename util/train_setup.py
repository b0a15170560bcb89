"""Run setup shared by the training scripts (rank-0 logger and checkpoint prefix, the DataLoader)."""
from __future__ import annotations

import datetime
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from util.distributed import DistContext, make_worker_init_fn
from util.hyper_para import HyperParameters
from util.logger import TensorboardLogger


def make_run_logger(para: HyperParameters, ctx: DistContext) -> tuple[TensorboardLogger | None, Path | None]:
    """Rank 0: the tensorboard logger and ``saves/<long_id>/<long_id>`` (``None`` with ``--id NULL``);
    other ranks: ``(None, None)``. ``long_id`` = ``<%b%d_%H.%M.%S>_<id>`` as the original."""
    if not ctx.is_main:
        return None, None
    long_id = save_prefix = None
    if para["id"].lower() != "null":
        long_id = f"{datetime.datetime.now().strftime('%b%d_%H.%M.%S')}_{para['id']}"
        save_prefix = Path(para["save_dir"]) / long_id / long_id
    logger = TensorboardLogger(para["id"], long_id, para["log_dir"])
    logger.log_hyperparameters(para)
    return logger, save_prefix


def make_loader(dataset: Dataset, para: HyperParameters, ctx: DistContext,
                sampler: DistributedSampler | None = None) -> tuple[DataLoader, DistributedSampler]:
    """The original loader: ``DistributedSampler(shuffle=True)``, ``--batch_size`` per process, ``drop_last``,
    ``--num_workers`` workers seeded per rank."""
    if sampler is None:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True)
    loader = DataLoader(dataset, para["batch_size"], sampler=sampler, num_workers=para["num_workers"],
                        worker_init_fn=make_worker_init_fn(ctx.rank), drop_last=True,
                        pin_memory=ctx.device.type == "cuda")
    return loader, sampler
