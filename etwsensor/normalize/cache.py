"""A bounded LRU map with the counters the normalizer reports (hits, misses, evictions).

Every piece of normalizer state that grows with the event stream lives in one of these, so memory
stays flat however long a live session runs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """LRU map of at most ``max_size`` entries; ``get`` refreshes, ``put`` evicts the oldest."""

    __slots__ = ("_data", "evictions", "hits", "max_size", "misses", "name")

    def __init__(self, name: str, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"cache {name!r}: max_size must be >= 1, got {max_size}")
        self.name = name
        self.max_size = max_size
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        data = self._data
        value = data.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """Look up without touching LRU order or counters (for bookkeeping, not resolution)."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> V | None:
        """Store ``value``; returns the evicted value when the bound forced one out."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.max_size:
            self.evictions += 1
            return data.popitem(last=False)[1]
        return None

    def swap(self, key: K, value: V) -> V | None:
        """``put`` that returns the value ``key`` had (None when new): one call for get-then-put."""
        data = self._data
        old = data.get(key)
        if old is None:
            self.misses += 1
            data[key] = value
            if len(data) > self.max_size:
                self.evictions += 1
                data.popitem(last=False)
            return None
        self.hits += 1
        data[key] = value
        data.move_to_end(key)
        return old

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def pop_oldest(self) -> tuple[K, V] | None:
        """Remove and return the least recently used entry (None when empty)."""
        if not self._data:
            return None
        return self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._data),
            "max_size": self.max_size,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
