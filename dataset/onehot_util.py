"""Label maps → one-hot object masks."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def all_to_onehot(masks: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``masks``: label maps of any shape ``S`` (e.g. ``T×H×W``) → ``len(labels)×S`` uint8, channel k
    is 1 where ``masks == labels[k]``."""
    masks = np.asarray(masks)
    out = np.zeros((len(labels), *masks.shape), dtype=np.uint8)
    for k, label in enumerate(labels):
        out[k] = masks == label
    return out
