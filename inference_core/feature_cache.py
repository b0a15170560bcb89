"""Per-frame cache of query features, bounded in bytes.

Query features of a frame (the network's ``get_query_features``: key, value and the decoder's skip
branches for the real network) depend only on the frame, so they are computed
once and reused by every later pass and round. At 480×864 they take ~50 MB per frame, so the cache is
bounded in bytes (least recently used frames are evicted), not in frames.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

# whatever the network's get_query_features returns for a frame (query key first)
QueryFeatures = tuple[torch.Tensor, ...]


def _nbytes(feats: QueryFeatures) -> int:
    return sum(f.numel() * f.element_size() for f in feats)


class FeatureCache:
    def __init__(self, compute: Callable[[int], QueryFeatures], max_bytes: int):
        self._compute = compute
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, QueryFeatures] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __contains__(self, t: int) -> bool:
        return t in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, t: int) -> QueryFeatures:
        feats = self._items.get(t)
        if feats is not None:
            self._items.move_to_end(t)
            self.hits += 1
            return feats
        self.misses += 1
        feats = self._compute(t)
        size = _nbytes(feats)
        # always keep the frame being used, evict the oldest others to stay within budget
        while self._items and self._bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= _nbytes(old)
        self._items[t] = feats
        self._bytes += size
        return feats

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
