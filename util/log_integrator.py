"""Average logged values over a report window, reduce them across ranks, print/log on rank 0.

Like the original ``Integrator``: values are summed per key and divided by their count; ``hooks``
compute derived metrics from the sums (e.g. IoU = (Σi+1)/(Σu+1)); keys starting with ``hide`` are
used by hooks but not logged. Every rank must call :meth:`finalize` (it is a collective call), with
the same keys.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch

from util.distributed import get_rank, reduce_mean_to_main

Hook = Callable[[Mapping[str, float]], tuple[str, float]]


class Integrator:
    def __init__(self, logger=None):
        """``logger``: a :class:`util.logger.TensorboardLogger` on rank 0, ``None`` elsewhere."""
        self.logger = logger
        self.sums: dict[str, float | torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.hooks: list[Hook] = []

    def add_value(self, key: str, value: float | int | torch.Tensor) -> None:
        # Tensors stay on their device (detached) until finalize: no GPU sync per iteration.
        v = value.detach().float().mean() if isinstance(value, torch.Tensor) else float(value)
        if key in self.sums:
            self.sums[key] = self.sums[key] + v
            self.counts[key] += 1
        else:
            self.sums[key] = v
            self.counts[key] = 1

    def add_dict(self, values: Mapping[str, float | int | torch.Tensor]) -> None:
        for k, v in values.items():
            self.add_value(k, v)

    def add_hook(self, hook: Hook | Iterable[Hook]) -> None:
        if callable(hook):
            self.hooks.append(hook)
        else:
            self.hooks.extend(hook)

    def reset_except_hooks(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def finalize(self, prefix: str, it: int) -> dict[str, float]:
        """Reduce the window's averages to rank 0, log them there, and return them (rank 0: the
        averages over all ranks; other ranks: an empty dict)."""
        sums = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in self.sums.items()}
        for hook in self.hooks:
            try:
                k, v = hook(sums)
            except KeyError:  # the hook's inputs were not logged in this window
                continue
            sums[k] = float(v)
            self.counts[k] = 1
        keys = sorted(k for k in sums if not k.startswith("hide"))
        averages = reduce_mean_to_main([sums[k] / self.counts[k] for k in keys])
        if get_rank() != 0:
            return {}
        result = dict(zip(keys, averages))
        if self.logger is not None:
            for k in keys:
                self.logger.log_metrics(prefix, k, result[k], it)
        return result
