"""Re-seeding so that separately applied random transforms draw identical parameters."""
from __future__ import annotations

import random

import torch


def reseed(seed: int) -> None:
    """Seed ``random`` and ``torch`` (what torchvision's random transforms draw from) with ``seed``.

    Calling it with the same seed before transforming the image and each mask makes them share the
    same flip / crop / jitter parameters, as the original datasets do.
    """
    random.seed(seed)
    torch.manual_seed(seed)
