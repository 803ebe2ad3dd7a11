"""One loaded model per process and key, swapped by reference when the key changes.

The key names what is served: (version id, runtime, artifact identity such as a checksum or
path). When an endpoint moves to another version, the next request asks for a new key and gets
a freshly loaded predictor; requests still holding the old one finish on it (Triton's
model-repository polling and TorchServe's versioned workers work this way). Loading happens
outside the cache lock, once per key even when many threads ask at the same moment.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

DEFAULT_MAX_MODELS = 4


class ModelCache:
    def __init__(self, *, max_models: int = DEFAULT_MAX_MODELS) -> None:
        self.max_models = max_models
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def get_or_load(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        """The cached value for `key`, loading it with `loader()` once if absent."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            value = self.get(key)
            if value is not None:
                return value
            try:
                value = loader()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            self.put(key, value)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_models:
                _, evicted = self._entries.popitem(last=False)
                _close(evicted)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop entries whose key matches (e.g. an endpoint's old versions); returns how many.
        Callers still holding a dropped model keep using it until they let go."""
        with self._lock:
            keys = [key for key in self._entries if predicate(key)]
            for key in keys:
                _close(self._entries.pop(key))
        return len(keys)

    def clear(self) -> None:
        self.discard(lambda key: True)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


model_cache = ModelCache()


class TtlCache:
    """Small per-process memo of answers that may be a few seconds stale (who a token is, what
    an endpoint serves), so the hot path does not ask the database on every request. Entries
    expire after `ttl_seconds`; `clear()` drops everything at once (on any change this process
    makes itself). Bounded: when full, the whole memo is dropped rather than tracked per key."""

    def __init__(self, *, ttl_seconds: float, max_entries: int = 4096) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value memoised under `key` if younger than the TTL, else `compute()` (outside the
        lock; an exception is not memoised). A value computed while `clear()` ran is returned
        but not kept, so a change is never hidden behind a read that started before it."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        if self.ttl_seconds <= 0:
            return compute()
        generation = self._generation
        value = compute()
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (now + self.ttl_seconds, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)
