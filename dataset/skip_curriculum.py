"""The propagation trainer's maximum-skip curriculum (Mask-Propagation stages 1 and 2).

Training starts with ``max_skip = 5``; at epochs ``round(total_epochs · f)`` for the fractions of the stage
the skip becomes 10, 15, 20, 25 and finally 5 again. YouTube-VOS training videos are annotated every 5th
frame, so their datasets get ``max_skip // 5``. The original rebuilt its loader at those epochs;
:class:`SkipCurriculumSampler` sets the datasets' ``max_jump`` in ``set_epoch`` instead (DataLoader workers
are started per epoch, after ``set_epoch``, so they see the new value).
"""
from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

INITIAL_SKIP = 5
SKIP_VALUES = (10, 15, 20, 25, 5)
SKIP_FRACTIONS = {1: (0.1, 0.2, 0.3, 0.4, 0.8, 1.0), 2: (0.1, 0.2, 0.3, 0.4, 0.9, 1.0)}


def skip_change_epochs(total_epochs: int, fractions: Sequence[float]) -> list[int]:
    """Epochs at which the skip changes: ``round(total_epochs · f)``."""
    return [round(total_epochs * f) for f in fractions]


def max_skip_at_epoch(epoch: int, total_epochs: int, stage: int) -> int:
    """The maximum skip used during ``epoch`` (0-based) of a ``total_epochs`` run of ``stage`` (1 or 2)."""
    skip = INITIAL_SKIP
    for change, value in zip(skip_change_epochs(total_epochs, SKIP_FRACTIONS[stage]), SKIP_VALUES):
        if epoch >= change:
            skip = value
    return skip


class SkipCurriculumSampler(DistributedSampler):
    """A ``DistributedSampler`` over a concatenation that also sets ``max_jump`` of each VOS dataset at
    every ``set_epoch``: ``datasets`` is a list of ``(dataset, divisor)`` (5 for YouTube-VOS, else 1)."""

    def __init__(self, dataset: Dataset, datasets: Sequence[tuple[Dataset, int]], stage: int, total_epochs: int,
                 num_replicas: int, rank: int, verbose: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True)
        self.datasets = list(datasets)
        self.stage = stage
        self.total_epochs = total_epochs
        self.verbose = verbose
        self.current_skip: int | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        skip = max_skip_at_epoch(epoch, self.total_epochs, self.stage)
        if skip != self.current_skip:
            for ds, divisor in self.datasets:
                ds.max_jump = skip // divisor
            if self.verbose:
                print(f"Epoch {epoch}: max skip {skip}.", flush=True)
            self.current_skip = skip
