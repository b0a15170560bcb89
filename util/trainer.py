"""Generic distributed training loop shared by the trainers (fusion now; propagation and S2M later).

A trainer subclasses :class:`Trainer` and implements :meth:`Trainer.compute` (forward pass + losses
for one batch) and optionally :meth:`Trainer.log_images`. The base class provides:

- DistributedDataParallel around the trainable network when a process group exists (``torchrun``),
  the plain network in a single process;
- the original loop: epochs over a ``DistributedSampler`` (``set_epoch`` each epoch), one optimizer
  step and one scheduler step per iteration, stop at ``iterations``;
- logging every ``report_interval`` iterations (averages reduced over ranks, ``train/lr``,
  ``train/time`` seconds per iteration, a progress line with it/s and ETA), images every
  ``image_interval``;
- rank-0 atomic checkpoints every ``save_interval`` iterations and at the end:
  ``<prefix>_<it>.pth`` = the plain network state dict (no ``module.`` prefix) and
  ``<prefix>_checkpoint.pth`` = ``{it, network, optimizer, scheduler}``, overwritten each time.
  ``it`` is the number of optimizer steps taken, so resuming from it continues exactly there;
- Ctrl-C / SIGTERM: the current iteration is finished, all ranks agree to stop, rank 0 saves, and
  ``stop_signal`` records the signal so the script exits with 128 + its number (130 / 143), not 0: a
  chain ``train.py ... && next stage`` stops. A second Ctrl-C aborts at once (without saving).
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from util.checkpoint import CheckpointError, load_weights
from util.distributed import DistContext, any_rank_true
from util.fileio import atomic_path
from util.log_integrator import Integrator
from util.logger import ProgressMeter, TensorboardLogger


@dataclass
class TrainerConfig:
    iterations: int
    report_interval: int = 100
    image_interval: int = 500
    save_interval: int = 5000
    # ``saves/<long_id>/<long_id>``; ``None`` disables saving (the original's ``--id NULL``)
    save_prefix: Path | None = None


def move_to_device(data: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``; other values are left as they are."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=True)
    if isinstance(data, Mapping):
        return {k: move_to_device(v, device) for k, v in data.items()}
    return data


class Trainer:
    """Base trainer. ``network`` is the trainable module (unwrapped); ``optimizer`` must have been
    built over its parameters."""

    def __init__(self, ctx: DistContext, network: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainerConfig,
                 logger: TensorboardLogger | None = None, hooks: Iterable = ()):
        self.ctx = ctx
        self.network = network.to(ctx.device)
        if ctx.initialized:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model: nn.Module = DistributedDataParallel(self.network, device_ids=device_ids,
                                                            output_device=device_ids[0] if device_ids else None,
                                                            broadcast_buffers=False)
        else:
            self.model = self.network
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.config = config
        self.logger = logger if ctx.is_main else None
        self.integrator = Integrator(self.logger)
        self.integrator.add_hook(list(hooks))
        self.loss_history: list[float] = []  # this rank's total_loss per iteration (for tests/diagnostics)
        self._stop_requested = False
        self._sigint_count = 0
        self._stop_signal: int | None = None
        self._in_step = False

    # ----------------------------------------------------------------- to implement in subclasses
    def compute(self, data: dict, it: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Forward one batch (already on the device). Return ``(losses, outputs)``; ``losses`` must hold
        ``total_loss`` (a scalar tensor with grad); every entry is averaged into the logs."""
        raise NotImplementedError

    def log_images(self, data: dict, outputs: dict, it: int) -> None:
        """Log an image grid on rank 0 (called every ``image_interval`` iterations)."""

    def train_mode(self) -> None:
        """Put the networks in the mode used while training (default ``train()``)."""
        self.model.train()

    # ------------------------------------------------------------------------------ checkpoints
    def weights_path(self, it: int) -> Path | None:
        p = self.config.save_prefix
        return None if p is None else p.parent / f"{p.name}_{it}.pth"

    def checkpoint_path(self) -> Path | None:
        p = self.config.save_prefix
        return None if p is None else p.parent / f"{p.name}_checkpoint.pth"

    def save(self, it: int) -> None:
        """Rank 0: write the weights-only file and the full checkpoint (atomically)."""
        if not self.ctx.is_main:
            return
        if self.config.save_prefix is None:
            print("Saving has been disabled (--id NULL).", flush=True)
            return
        weights = self.weights_path(it)
        with atomic_path(weights) as tmp:
            torch.save(self.network.state_dict(), tmp)
        print(f"Model saved to {weights}.", flush=True)
        checkpoint = self.checkpoint_path()
        with atomic_path(checkpoint) as tmp:
            torch.save({"it": it, "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, tmp)
        print(f"Checkpoint saved to {checkpoint}.", flush=True)

    def load_checkpoint(self, path: str | os.PathLike) -> int:
        """Restore network, optimizer and scheduler from a full checkpoint; return its iteration."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found (--load_model expects a "
                                  "saves/<run>/<run>_checkpoint.pth written by this trainer)")
        try:
            ckpt = torch.load(path, map_location=self.ctx.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - reported as one line
            detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: cannot be read as a training checkpoint ({detail}); "
                                  "delete it or pick another *_checkpoint.pth") from None
        if not isinstance(ckpt, Mapping) or not {"it", "network", "optimizer", "scheduler"} <= set(ckpt):
            raise CheckpointError(f"{path}: not a full training checkpoint (needs it, network, optimizer, "
                                  "scheduler); use --load_network for a weights-only .pth")
        try:
            self.network.load_state_dict(ckpt["network"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(f"{path}: does not fit this trainer ({first}); is it the right checkpoint?") from None
        print(f"Resumed from {path} at iteration {int(ckpt['it'])}.", flush=True)
        return int(ckpt["it"])

    def load_network(self, path: str | os.PathLike) -> None:
        """Load weights only (e.g. the stage-0 result before stage 1)."""
        load_weights(self.network, path, what=type(self.network).__name__)
        print(f"Network weights loaded from {path}.", flush=True)

    # --------------------------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if os.getpid() != self._handler_pid:
            # a forked DataLoader worker inherited the handler: let the training process decide
            return
        if signum == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                raise KeyboardInterrupt
        if self._stop_signal is None:
            self._stop_signal = int(signum)
        if not self._stop_requested and self.ctx.is_main:
            print(f"\n{signal.Signals(signum).name} received by {os.getpid()}: stopping after this iteration and saving "
                  "(press Ctrl-C again to abort).", flush=True)
        self._stop_requested = True

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        self._handler_pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # ------------------------------------------------------------------------------------ loop
    def train_iteration(self, data: dict, it: int) -> None:
        """One optimisation step at iteration ``it`` (0-based: ``it`` steps already taken)."""
        cfg = self.config
        data = move_to_device(data, self.ctx.device)
        torch.set_grad_enabled(True)
        losses, outputs = self.compute(data, it)
        self.integrator.add_dict(losses)
        self.loss_history.append(float(losses["total_loss"].detach()))

        if self.ctx.is_main and it % cfg.image_interval == 0 and it != 0 and self.logger is not None:
            with torch.no_grad():
                self.log_images(data, outputs, it)
        if it % cfg.report_interval == 0 and it != 0:
            if self.logger is not None:
                self.logger.log_scalar("train/lr", self.scheduler.get_last_lr()[0], it)
                self.logger.log_metrics("train", "time", (time.time() - self._last_report_time) / cfg.report_interval, it)
                print(self._progress.line(it), flush=True)
            self._last_report_time = time.time()
            self.integrator.finalize("train", it)
            self.integrator.reset_except_hooks()
        if it % cfg.save_interval == 0 and it != 0 and it != self._start_it:
            self.save(it)

        self.optimizer.zero_grad(set_to_none=True)
        losses["total_loss"].backward()
        self.optimizer.step()
        self.scheduler.step()

    def fit(self, loader: torch.utils.data.DataLoader, sampler=None, start_it: int = 0) -> int:
        """Train from ``start_it`` until ``config.iterations``; return the iteration reached.

        ``sampler``: the loader's ``DistributedSampler`` (``set_epoch`` is called each epoch).
        """
        cfg = self.config
        if len(loader) == 0:
            raise ValueError("the training loader yields no batch: fewer samples than --batch_size × processes")
        it = self._start_it = start_it
        self._progress = ProgressMeter(start_it, cfg.iterations)
        self._last_report_time = time.time()
        start_epoch = it // len(loader)
        total_epochs = math.ceil(cfg.iterations / len(loader))
        if self.ctx.is_main:
            print(f"Training iterations {start_it} → {cfg.iterations} ({len(loader)} batches per epoch, "
                  f"epochs {start_epoch} → {total_epochs}).", flush=True)
        previous = self._install_signal_handlers()
        finished_cleanly = stopping = False
        try:
            self.train_mode()
            for epoch in range(start_epoch, total_epochs):
                if it >= cfg.iterations:
                    break
                if sampler is not None and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                for data in loader:
                    self._in_step = True
                    self.train_iteration(data, it)
                    it += 1
                    self._in_step = False
                    if it >= cfg.iterations:
                        break
                    if any_rank_true(self._stop_requested):
                        stopping = self._stop_requested = True  # every rank stops at the same iteration
                        if self._stop_signal is None:   # another rank was signalled: stopped from outside
                            self._stop_signal = int(signal.SIGTERM)
                        break
                if stopping:
                    break
            finished_cleanly = True
        except Exception:
            # A stop request can surface as an error from the data loader (its workers get the same
            # Ctrl-C); that is a clean stop, anything else is re-raised.
            if not (self._stop_requested and not self._in_step):
                raise
            finished_cleanly = True
        finally:
            self._restore_signal_handlers(previous)
            # Save unless an error struck in the middle of a step (the state could be half-updated);
            # a failure while fetching data (e.g. a DataLoader worker killed by Ctrl-C) leaves a
            # consistent state at ``it``.
            if it > start_it and not self._in_step:
                self.save(it)
            elif not finished_cleanly and self.ctx.is_main and self._in_step:
                print(f"Not saving: training failed inside iteration {it}; the last checkpoint stays valid.",
                      flush=True)
            if self.logger is not None:
                self.logger.flush()
        return it

    @property
    def stop_signal(self) -> int | None:
        """The signal (SIGINT / SIGTERM) that stopped training early on this process, else ``None``."""
        return self._stop_signal
