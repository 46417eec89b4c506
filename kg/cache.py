"""`Memo`: the one cache helper: bounded (least recently used entries go first), thread-safe, and
cleared by a public `clear()`. Linking and encoding memoise what documents keep asking for (dense
hits of a name, a place's sports teams, an entity's neighbours); a long job must not grow without
bound, and one bundle serves many threads. `TurnLock`: a lock taken in turn, for what threads share.
"""

from __future__ import annotations

import threading
from collections import deque
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


class TurnLock:
    """A lock that threads take in the order they asked for it. `threading.Lock` lets the thread
    that just released it take it again at once, so a long job that takes it piece by piece (a
    400 KB text linked 6,000 tokens at a time) starved a short request in another thread for the
    whole job; here the short request's turn comes after one piece."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._waiting: deque[object] = deque()
        self._held = False

    def __enter__(self) -> None:
        me = object()
        with self._turns:
            self._waiting.append(me)
            self._turns.wait_for(lambda: not self._held and self._waiting[0] is me)
            self._waiting.popleft()
            self._held = True

    def __exit__(self, *exc: object) -> None:
        with self._turns:
            self._held = False
            self._turns.notify_all()
