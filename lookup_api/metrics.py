"""Prometheus metrics of the lookup API.

Each app gets its own registry, so tests can build many apps. Under gunicorn the workers share
their numbers through ``PROMETHEUS_MULTIPROC_DIR`` (set up by ``gunicorn.conf.py``), and
``/metrics`` reports the sum over the live workers. Cache hit ratio:
``rate(predstore_api_cache_requests_total{result="hit"}[5m]) / rate(predstore_api_cache_requests_total[5m])``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

#: The methods the request metric names; any other is counted as "other", so a client sending
#: made-up methods cannot grow the metric without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Latency buckets in seconds, fine below 10 ms where lookups should land.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    pool: Gauge
    waiting: Gauge
    cache: Counter
    answers: Counter
    live: Counter
    #: Answers per (model, hour) not yet added to the store's ``lookup_counts``: [hits, misses, stale].
    tally: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)
    tally_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Labelled children by their labels: ``labels()`` validates and locks on every call, which
    #: cost a request more than the increments themselves.
    children: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def count_request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """Count one answered request (methods outside `METHODS` as "other") and its latency."""
        method = method if method in METHODS else "other"
        key = ("requests", route, method, str(status))
        if (counter := self.children.get(key)) is None:
            counter = self.children[key] = self.requests.labels(*key[1:])
        counter.inc()
        if seconds is not None:
            if (histogram := self.children.get(("latency", route))) is None:
                histogram = self.children[("latency", route)] = self.latency.labels(route)
            histogram.observe(seconds)

    def count_cache(self, result: str) -> None:
        """Count one cache lookup: 'hit' or 'miss'."""
        if (counter := self.children.get(("cache", result))) is None:
            counter = self.children[("cache", result)] = self.cache.labels(result)
        counter.inc()

    def count_answers(self, model: str, *, hits: int = 0, misses: int = 0, stale: int = 0,
                      now: float) -> None:
        """Count what lookups of ``model`` (a registered one) found: entities answered (``stale``
        of them older than the model's maximum age) and entities with no prediction served."""
        for outcome, n in (("hit", hits), ("miss", misses), ("stale", stale)):
            if n:
                if (counter := self.children.get(("answers", model, outcome))) is None:
                    counter = self.children[("answers", model, outcome)] = self.answers.labels(model, outcome)
                counter.inc(n)
        hour = datetime.fromtimestamp(now - now % 3600, UTC)
        with self.tally_lock:
            counts = self.tally.setdefault((model, hour), [0, 0, 0])
            counts[0], counts[1], counts[2] = counts[0] + hits, counts[1] + misses, counts[2] + stale

    def count_live(self, outcome: str, n: int) -> None:
        """Count ``n`` live predictions by outcome: scored, rejected (rows), recorded (written to the
        store) or dropped (the recording queue was full)."""
        if n:
            if (counter := self.children.get(("live", outcome))) is None:
                counter = self.children[("live", outcome)] = self.live.labels(outcome)
            counter.inc(n)

    def take_tally(self) -> dict[tuple[str, datetime], list[int]]:
        """The answers counted since the last call (`give_back` returns them if storing failed)."""
        with self.tally_lock:
            taken = dict(self.tally)
            self.tally.clear()
        return taken

    def give_back(self, taken: dict[tuple[str, datetime], list[int]], *, keep_after: datetime) -> None:
        """Put back counts that could not be stored, those of hours from ``keep_after`` on."""
        with self.tally_lock:
            for key, (hits, misses, stale) in taken.items():
                if key[1] >= keep_after:
                    counts = self.tally.setdefault(key, [0, 0, 0])
                    counts[0], counts[1], counts[2] = counts[0] + hits, counts[1] + misses, counts[2] + stale

    def pool_stats(self, stats: dict[str, int]) -> None:
        """Set the pool gauges from psycopg_pool's ``get_stats()``."""
        size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
        self.pool.labels("in_use").set(size - available)
        self.pool.labels("idle").set(available)
        self.waiting.set(stats.get("requests_waiting", 0))


def make_metrics() -> Metrics:
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        requests=Counter("predstore_api_requests", "Requests answered, by route, method and status.",
                         ["route", "method", "status"], registry=registry),
        latency=Histogram("predstore_api_request_seconds", "Time to answer a request, by route.", ["route"],
                          buckets=BUCKETS, registry=registry),
        pool=Gauge("predstore_api_pool_connections", "Database connections of the pool, by state: in_use "
                   "(lent to a request) or idle.", ["state"], multiprocess_mode="livesum", registry=registry),
        waiting=Gauge("predstore_api_pool_requests_waiting", "Requests waiting for a database connection.",
                      multiprocess_mode="livesum", registry=registry),
        cache=Counter("predstore_api_cache_requests", "Prediction cache lookups by result (hit or miss).",
                      ["result"], registry=registry),
        answers=Counter("predstore_api_answers", "Entities asked of a registered model, by outcome: hit (a "
                        "prediction answered), miss (none served), stale (answered, older than the maximum age).",
                        ["model", "outcome"], registry=registry),
        live=Counter("predstore_api_live_predictions", "Live scoring, by outcome: scored, rejected (rows refused "
                     "by validation), recorded (written to live_predictions), dropped (not recorded: the queue "
                     "was full while the database was away).", ["outcome"], registry=registry),
    )


def render(metrics: Metrics) -> tuple[bytes, str]:
    """The exposition text and its content type: this process's numbers, or every worker's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
