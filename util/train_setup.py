"""Run setup shared by the training scripts (argument checks, rank-0 logger and checkpoint prefix, the
DataLoader, the command-line tail)."""
from __future__ import annotations

import datetime
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from util import cli
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


# options that name a checkpoint to read, with what it is (absent options are skipped)
CHECKPOINT_OPTIONS = {"load_network": "weights file", "load_model": "training checkpoint",
                      "load_prop": "propagation checkpoint", "load_deeplab": "DeepLabV3+ checkpoint"}


def validate_training_args(para: HyperParameters) -> None:
    """Every check that needs no data or network, before any work: numbers, the checkpoints to read,
    and the output folders (``--save_dir``, ``--log_dir``), which are created now so a bad location
    fails in a second instead of at the first save hours later."""
    for key in ("iterations", "batch_size", "report_interval", "image_interval", "save_interval", "crop_size"):
        if key in para:
            cli.positive_int(f"--{key}", para[key])
    if "num_workers" in para:
        cli.non_negative_int("--num_workers", para["num_workers"])
    for key in ("lr", "gamma"):
        if key in para:
            cli.positive_float(f"--{key}", para[key])
    for step in para.get("steps") or []:
        cli.non_negative_int("--steps", step)
    for key, what in CHECKPOINT_OPTIONS.items():
        if para.get(key):
            cli.input_file(f"--{key}", para[key], what,
                           "check the path (download_model.py fetches the released weights)")
    if str(para.get("id", "NULL")).lower() != "null":
        cli.output_dir("--save_dir", para["save_dir"])
        cli.output_dir("--log_dir", para["log_dir"])


def script_main(prog: str, parse: Callable[[Sequence[str] | None], HyperParameters],
                run: Callable[[HyperParameters], object], errors: tuple[type[BaseException], ...],
                argv: Sequence[str] | None = None) -> int:
    """CLI wrapper of a training script (``prog`` names it in messages).

    Bad options or data → one ``error: …`` line, exit 2; Ctrl-C / SIGTERM → the trainer saves a checkpoint
    and the process exits 130 / 143 (not 0), so ``train.py ... && next stage`` does not go on."""
    def run_checked(para: HyperParameters) -> int:
        validate_training_args(para)
        trainer = run(para)
        stop = getattr(trainer, "stop_signal", None)
        if stop is not None:
            it = getattr(trainer, "iteration", None)
            print(f"{prog}: interrupted by {signal.Signals(stop).name}"
                  + (f" at iteration {it} (checkpoint saved; resume with --load_model)" if it is not None else ""),
                  file=sys.stderr)
            return 128 + int(stop)
        return 0

    para = parse(argv)
    # ValueError: e.g. a loader without a single batch (--batch_size larger than the data)
    return cli.run_cli(run_checked, para, (*errors, ValueError))
