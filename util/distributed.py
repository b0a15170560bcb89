"""Process-group setup, rank helpers and the original trainers' seeding scheme.

Training scripts run either under ``torchrun --nproc_per_node=N script.py ...`` (env:// rendezvous:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` set by torchrun) or as a
plain ``python script.py ...`` process, which is a world of one without a process group. NCCL is used
when CUDA is available, gloo otherwise (CPU).

Seeds follow the original MiVOS / Mask-Propagation / S2M trainers:

1. :func:`seed_everything` (``torch``, ``numpy``, ``random`` ← 14159265) before the networks are
   built, so every rank starts from the same initialisation;
2. :func:`reseed_numpy_for_rank` after the data loaders are built
   (``np.random.seed(np.random.randint(2**30 - 1) + rank*100)``), so ranks sample different data;
3. :func:`make_worker_init_fn` for the DataLoader workers:
   ``np.random.seed(torch.initial_seed() % 2**31 + worker_id + rank*100)``.
"""
from __future__ import annotations

import datetime
import functools
import os
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

GLOBAL_SEED = 14159265


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` in ``world_size`` processes, ``local_rank`` on its node,
    the ``device`` it trains on, and whether a process group was initialised."""
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    initialized: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def launched_by_torchrun() -> bool:
    """True when the env:// variables of torchrun (or ``torch.distributed.run``) are present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Initialise the process group from the environment (or a world of one without torchrun).

    ``backend``: ``None`` picks ``nccl`` when CUDA is available, else ``gloo``. On CUDA the device is
    ``cuda:LOCAL_RANK`` and it is made the current device.
    """
    from util.precision import resolve_device
    use_cuda = resolve_device(None).type == "cuda"
    local_rank = _env_int("LOCAL_RANK", 0)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not launched_by_torchrun():
        return DistContext(rank=0, local_rank=0, world_size=1, device=device, initialized=False)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(),
                       device=device, initialized=True)


def cleanup_distributed() -> None:
    """Destroy the process group if one was initialised (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def _reduction_device() -> torch.device:
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_mean_to_main(values: list[float]) -> list[float]:
    """Average ``values`` over all ranks; the result is meaningful on rank 0 (others get partial sums /
    world size). A world of one returns the values unchanged."""
    if get_world_size() == 1 or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_reduction_device())
    dist.reduce(t, dst=0)
    return (t / get_world_size()).cpu().tolist()


def any_rank_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one rank (a collective call)."""
    if get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_reduction_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def seed_everything(seed: int = GLOBAL_SEED) -> None:
    """Seed ``torch``, ``numpy`` and ``random`` identically on every rank (before building networks)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def reseed_numpy_for_rank(rank: int) -> None:
    """Give each rank its own numpy stream for data sampling (done after the loaders are built)."""
    np.random.seed(np.random.randint(2 ** 30 - 1) + rank * 100)


def _seed_worker(worker_id: int, rank: int) -> None:
    np.random.seed((torch.initial_seed() % 2 ** 31) + worker_id + rank * 100)


def make_worker_init_fn(rank: int) -> Callable[[int], None]:
    """A picklable DataLoader ``worker_init_fn`` seeding numpy with
    ``torch.initial_seed() % 2**31 + worker_id + rank*100`` (the original scheme)."""
    return functools.partial(_seed_worker, rank=rank)
