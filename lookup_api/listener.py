"""One thread per process that listens for publishes and API key changes.

While it is connected the prediction cache is on; when it loses its connection it turns the cache
off (a publish could go unseen), then reconnects with backoff and turns it back on, empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from store import lookups
from store.apikeys import APIKEYS_CHANNEL
from store.db import connect
from store.errors import PredstoreError
from store.predictions import PUBLISH_CHANNEL

log = logging.getLogger("predstore.lookup_api.listener")

CHANNELS = (PUBLISH_CHANNEL, APIKEYS_CHANNEL)

#: Seconds between calls of ``on_tick`` (and the longest ``stop`` waits for the thread).
TICK = 1.0


@dataclass(frozen=True)
class Handlers:
    """What the listener calls, from its own thread."""

    on_connect: Callable[[], None]
    on_lost: Callable[[], None]
    on_notify: Callable[[str, str], None]
    on_tick: Callable[[], None] = lambda: None


@dataclass
class Listener:
    url: str
    handlers: Handlers
    stopping: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="predstore-listener", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=TICK + 5)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self._listen()
                backoff = 0.1
            except PredstoreError as exc:
                log.warning("cache listener disconnected, retrying in %.1f s: %s", backoff, exc)
            finally:
                self.connected.clear()
                self.handlers.on_lost()
            self.handlers.on_tick()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _listen(self) -> None:
        with connect(self.url, autocommit=True, application_name="predstore-lookup-listener") as conn:
            lookups.listen(conn, CHANNELS)
            self.handlers.on_connect()
            self.connected.set()
            while not self.stopping.is_set():
                for channel, payload in lookups.notifications(conn, timeout=TICK):
                    self.handlers.on_notify(channel, payload)
                self.handlers.on_tick()
