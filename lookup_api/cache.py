"""The in-process cache of published predictions.

Safe because a published run never changes: an answer stays right until a newer run of the same
model is published, which the listener reports. Each model has a generation number, bumped when
its entries are dropped; an answer read from the database is kept only if its model's generation
did not move while it was read, so a lookup racing a publish never caches the old answer. While
the listener is disconnected the cache is off: publishes could go unseen.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

#: What `PredictionCache.get` returns when it holds nothing for a key.
MISSING: Any = object()


class PredictionCache:
    """Answers by (model, key), at most ``max_entries`` per model, oldest dropped first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.enabled = False
        self._lock = threading.Lock()
        self._entries: dict[str, dict[Hashable, Any]] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped by clear(): entries read before it are never kept

    def generation(self, model: str) -> tuple[int, int] | None:
        """A token to pass to `put`; None while the cache is off."""
        if not self.enabled or not self.max_entries:
            return None
        return self._epoch, self._generations.get(model, 0)

    def get(self, model: str, key: Hashable) -> Any:
        if not self.enabled:
            return MISSING
        entries = self._entries.get(model)
        return MISSING if entries is None else entries.get(key, MISSING)

    def put(self, model: str, key: Hashable, value: Any, token: tuple[int, int] | None) -> None:
        """Keep ``value`` unless the model's entries were dropped since ``token`` was taken."""
        if token is None:
            return
        with self._lock:
            if not self.enabled or token != (self._epoch, self._generations.get(model, 0)):
                return
            entries = self._entries.setdefault(model, {})
            if len(entries) >= self.max_entries and key not in entries:
                del entries[next(iter(entries))]
            entries[key] = value

    def invalidate(self, model: str) -> None:
        """Drop every answer about ``model`` (a run of it was published)."""
        with self._lock:
            self._generations[model] = self._generations.get(model, 0) + 1
            self._entries.pop(model, None)

    def clear(self, *, enabled: bool) -> None:
        """Drop everything and turn the cache on or off."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self.enabled = enabled

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())
