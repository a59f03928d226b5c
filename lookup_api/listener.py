"""One thread per process that listens for publishes and API key changes.

While it is connected the prediction cache is on; when it loses its connection it turns the cache
off (a publish could go unseen), then reconnects with backoff and turns it back on, empty. On a
hot standby, which refuses LISTEN, it polls the notice counters (`store.notices`) every `POLL`
seconds instead: they change once the standby has replayed the change, so a cache is never
dropped before the new answers can be read there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from store import lookups
from store.apikeys import APIKEYS_CHANNEL
from store.db import connect
from store.errors import PredstoreError
from store.predictions import PUBLISH_CHANNEL

log = logging.getLogger("predstore.lookup_api.listener")

CHANNELS = (PUBLISH_CHANNEL, APIKEYS_CHANNEL)

#: Seconds between calls of ``on_tick``.
TICK = 1.0
#: Seconds the listener waits for a notification before it looks whether it should stop (the
#: longest ``stop`` waits for the thread, and so a worker's shutdown or a test's teardown).
WAKE = 0.1
#: Seconds between two reads of the notice counters on a standby.
POLL = 0.25


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
            self.thread.join(timeout=WAKE + 5)

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
            if not lookups.listen(conn, CHANNELS):
                self._poll(conn)
                return
            self.handlers.on_connect()
            self.connected.set()
            ticked = time.monotonic()
            while not self.stopping.is_set():
                for channel, payload in lookups.notifications(conn, timeout=WAKE):
                    self.handlers.on_notify(channel, payload)
                if time.monotonic() - ticked >= TICK:
                    ticked = time.monotonic()
                    self.handlers.on_tick()

    def _poll(self, conn: psycopg.Connection) -> None:
        """Tell each notice whose counter moved, reading the standby every `POLL` seconds."""
        seen = lookups.notice_counters(conn)
        self.handlers.on_connect()
        self.connected.set()
        ticked = time.monotonic()
        while not self.stopping.wait(POLL):
            now = lookups.notice_counters(conn)
            for (channel, payload), n in now.items():
                if seen.get((channel, payload)) != n:
                    self.handlers.on_notify(channel, payload)
            seen = now
            if time.monotonic() - ticked >= TICK:
                ticked = time.monotonic()
                self.handlers.on_tick()
