"""Run setup shared by the training scripts (rank-0 logger and checkpoint prefix, the DataLoader)."""
from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Callable, Sequence

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from util.distributed import DistContext, make_worker_init_fn, reseed_numpy_for_rank
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


def fit_and_close(trainer, loader: DataLoader, sampler: DistributedSampler, start_it: int, ctx: DistContext,
                  logger: TensorboardLogger | None):
    """Train from ``start_it`` and close the logger; returns the trainer (``trainer.iteration`` reached)."""
    # different data sampling per rank from here on (the networks were initialised identically)
    reseed_numpy_for_rank(ctx.rank)
    trainer.iteration = trainer.fit(loader, sampler, start_it)
    if logger is not None:
        logger.close()
    return trainer


def script_main(prog: str, parse: Callable[[Sequence[str] | None], HyperParameters],
                run: Callable[[HyperParameters], object], errors: tuple[type[BaseException], ...],
                argv: Sequence[str] | None = None) -> int:
    """CLI wrapper of a training script: expected failures become one ``prog: error: …`` line, exit 1."""
    para = parse(argv)
    try:
        run(para)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
