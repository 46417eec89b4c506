"""`Memo`: the one cache helper: bounded (least recently used entries go first), thread-safe, and
cleared by a public `clear()`. Linking and encoding memoise what documents keep asking for (dense
hits of a name, a place's sports teams, an entity's neighbours); a long job must not grow without
bound, and one bundle serves many threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A bounded, thread-safe memo. A value is computed outside the lock: two threads asking for
    the same missing key may both compute it (the same value), but never block each other."""

    def __init__(self, maxsize: int) -> None:
        self._cache: LRUCache[K, V] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._cache[key] = value
        return value

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        found = self.get(key)
        return self.put(key, compute()) if found is None else found

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
