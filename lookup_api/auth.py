"""API keys: ``Authorization: Bearer <key>`` on every /v1 request.

Keys are required unless ``PREDSTORE_API_REQUIRE_KEY`` is false (for local development), and
then as soon as any key was ever created (revoking them all keeps the API closed). A key may be
scoped to some models: it is refused (403) on any other model, and lists show only its models.
The process keeps the hashes of the valid keys, reloaded when the listener hears that keys
changed, and at least every `RELOAD_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from store import apikeys

#: Longest time a revoked key keeps working if its notification was missed.
RELOAD_SECONDS = 30.0

_DUMMY_HASH = apikeys.hash_key("psk_none_none")

#: A key's hash, the models it may read (None: every model) and its scopes beyond lookups.
Scoped = tuple[str, frozenset[str] | None, frozenset[str]]


class KeyRing:
    """The keys this process accepts, loaded by ``load`` (which may raise `StoreUnavailable`)."""

    def __init__(self, load: Callable[[], tuple[bool, dict[str, Scoped]]], *, require: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._require = require
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._generation = 0  # bumped by invalidate(): a load that overlaps it is not trusted for long
        self._configured = require
        self._hashes: dict[str, Scoped] = {}

    def invalidate(self) -> None:
        self._generation += 1
        self._loaded_at = None

    def check(self, authorization: str | None, *, model: str | None = None,
              scope: str | None = None) -> frozenset[str] | None:
        """Raise 401 when a key is needed and missing, 403 when it is not valid, not for ``model``
        or lacks ``scope``; return the models the request may read (None: every model)."""
        self._refresh()
        if not self._configured:
            return None
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("this API needs a key: send `Authorization: Bearer <key>`",
                               www_authenticate=WWWAuthenticate("Bearer", {"realm": "predstore"}))
        key = key.strip()
        key_id = apikeys.key_id_of(key)
        expected, models, scopes = self._hashes.get(key_id or "", (_DUMMY_HASH, None, frozenset()))
        if not apikeys.matches(key, expected) or key_id not in self._hashes:
            raise Forbidden("the API key is not valid (unknown or revoked)")
        if model is not None and models is not None and model not in models:
            raise Forbidden(f"this API key may not read model {model[:128]!r}")
        if scope is not None and scope not in scopes:
            raise Forbidden(f"this API key may not {scope}: create one with `predstore apikeys create NAME "
                            f"--scope {scope}`")
        return models

    def _refresh(self) -> None:
        now = self._clock()
        if self._loaded_at is not None and now - self._loaded_at < RELOAD_SECONDS:
            return
        with self._lock:
            if self._loaded_at is not None and now - self._loaded_at < RELOAD_SECONDS:
                return
            generation = self._generation
            configured, hashes = self._load()
            self._configured, self._hashes = configured or self._require, hashes
            self._loaded_at = now if generation == self._generation else None
