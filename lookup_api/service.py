"""What the lookup API knows and does: its resources (pool, cache, keys, listener, metrics) and the
answers it builds from `store`, applying the cache and the staleness policy. Views call these."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from lookup_api.auth import KeyRing, Scoped
from lookup_api.cache import MISSING, PredictionCache
from lookup_api.errors import Stale
from lookup_api.listener import Handlers, Listener
from lookup_api.metrics import Metrics, make_metrics
from store import apikeys, lookups, migrate, registry
from store.apikeys import APIKEYS_CHANNEL
from store.db import database_url
from store.errors import NotFound, PredstoreError
from store.lookups import Prediction, PublishedRun
from store.predictions import PUBLISH_CHANNEL
from store.settings import Settings

T = TypeVar("T")

log = logging.getLogger("predstore.lookup_api")
#: Seconds between two additions of the answers counted to the store's ``lookup_counts``.
COUNTS_EVERY = 60.0


@dataclass(frozen=True)
class Service:
    """One process's lookup service."""

    settings: Settings
    pool: ConnectionPool
    cache: PredictionCache
    keys: KeyRing
    metrics: Metrics
    listener: Listener
    clock: Callable[[], float]

    def read(self, query: Callable[[psycopg.Connection], T]) -> T:
        """``query(conn)`` on a pooled connection; `StoreUnavailable` when the database is away."""
        return lookups.read(self.pool, query, timeout=self.settings.api_pool_timeout)

    def close(self) -> None:
        self.listener.stop()
        store_counts(self)
        self.pool.close()


def make_service(settings: Settings, *, clock: Callable[[], float] = time.time) -> Service:
    """Build and start the service: the pool opens in the background, so a database that is
    down makes requests answer 503 until it is back, instead of stopping the process."""
    url = settings.api_reader_url or database_url(settings)
    pool = lookups.make_reader_pool(url, size=settings.api_pool_size)
    cache = PredictionCache(settings.api_cache_size)
    metrics = make_metrics()

    def load_keys() -> tuple[bool, dict[str, Scoped]]:
        return lookups.read(pool, apikeys.active_key_hashes, timeout=settings.api_pool_timeout)

    keys = KeyRing(load_keys, require=settings.api_require_key)

    def on_notify(channel: str, payload: str) -> None:
        if channel == PUBLISH_CHANNEL:
            cache.invalidate(payload)
        elif channel == APIKEYS_CHANNEL:
            keys.invalidate()

    stored = [clock()]

    def on_tick() -> None:
        metrics.pool_stats(pool.get_stats())
        if clock() - stored[0] >= COUNTS_EVERY:
            stored[0] = clock()
            store_counts(service)

    def on_connect() -> None:
        cache.clear(enabled=True)
        keys.invalidate()

    listener = Listener(url, Handlers(on_connect=on_connect, on_lost=lambda: cache.clear(enabled=False),
                                      on_notify=on_notify, on_tick=on_tick))
    service = Service(settings, pool, cache, keys, metrics, listener, clock)
    pool.open(wait=False)
    listener.start()
    return service


def store_counts(service: Service) -> None:
    """Add the answers counted since the last time to the store's ``lookup_counts`` (the monitor's
    miss rate). Kept for the next try while the database is away, for a day at most; not stored
    from a hot standby, which takes no writes (Prometheus has them)."""
    taken = service.metrics.take_tally()
    if not taken:
        return
    try:
        service.read(lambda conn: lookups.add_counts(conn, taken))
    except psycopg.errors.ReadOnlySqlTransaction:
        log.debug("lookup counts are not stored from a standby; Prometheus has them")
    except (PredstoreError, psycopg.Error) as exc:
        log.debug("lookup counts wait for the database: %s", exc)
        service.metrics.give_back(taken, keep_after=datetime.fromtimestamp(service.clock() - 86_400, UTC))


def prediction(service: Service, model: str, entity_id: str, *, version: int | None) -> dict[str, Any]:
    """The current prediction of one entity; `NotFound` (or `Stale`) when there is none to give."""
    key = (version, entity_id)
    found = service.cache.get(model, key)
    if service.cache.max_entries:  # a cache that is off is not looked up
        service.metrics.count_cache("miss" if found is MISSING else "hit")
    if found is MISSING:
        token = service.cache.generation(model)

        def query(conn: psycopg.Connection) -> Prediction | str:
            found = lookups.current_prediction(conn, model, entity_id, version=version)
            if found is None:
                lookups.check_model(conn, model, version=version)
                return _not_served(conn, model, entity_id, version=version)
            return found

        found = service.read(query)
        service.cache.put(model, key, found, token)
    if isinstance(found, str):
        service.metrics.count_answers(model, misses=1, now=service.clock())
        raise NotFound(found)
    answer = present(found, max_age=service.settings.max_age(model), now=service.clock())
    service.metrics.count_answers(model, hits=1, stale=int(answer["stale"]), now=service.clock())
    if answer["stale"] and service.settings.api_stale_policy == "hide":
        raise Stale(f"the prediction of model {model!r} for entity {entity_id!r} is {answer['age']:.0f} s old, "
                    f"older than the {service.settings.max_age(model)} s allowed")
    return answer


def _not_served(conn: psycopg.Connection, model: str, entity_id: str, *, version: int | None) -> str:
    """Why ``model`` has no prediction to serve for ``entity_id``, in one line."""
    snapshot = lookups.snapshot_of(conn, model) if version is None else None
    if snapshot is not None:
        return (f"entity {entity_id!r} was not in the latest snapshot of model {model!r} "
                f"(version {snapshot[0]}, run {snapshot[1]}), so it is no longer served")
    of_version = f" version {version}" if version is not None else ""
    return f"model {model!r}{of_version} has no published prediction for entity {entity_id!r}"


def predictions(service: Service, model: str, entity_ids: Sequence[str], *, version: int | None) -> str:
    """The current predictions of many entities as a JSON document, in one query (rendered by
    PostgreSQL: a batch skips the cache, which serves single lookups)."""
    max_age, now = service.settings.max_age(model), service.clock()

    def query(conn: psycopg.Connection) -> list[tuple[str, bool, str]]:
        rows = lookups.current_predictions_json(conn, model, entity_ids, version=version, now=now, max_age=max_age)
        if not rows:
            lookups.check_model(conn, model, version=version)
        return rows

    hide = service.settings.api_stale_policy == "hide"
    rows = service.read(query)
    found = {entity_id: text for entity_id, stale, text in rows if not (hide and stale)}
    answers = [found[e] for e in entity_ids if e in found]
    missing = [e for e in entity_ids if e not in found]
    stale = sum(1 for _, old, _ in rows if old)
    service.metrics.count_answers(model, hits=len(rows), misses=len(set(entity_ids)) - len(rows), stale=stale,
                                  now=service.clock())
    return '{"predictions":[' + ",".join(answers) + '],"missing":' + json.dumps(missing) + "}"


def present(p: Prediction, *, max_age: int | None, now: float) -> dict[str, Any]:
    """A prediction as the API shows it, with its age at ``now`` and whether it is older than ``max_age``."""
    age = round(max(0.0, now - p.scored_at.timestamp()), 3)
    stale = max_age is not None and age > max_age
    return {"entity_id": p.entity_id, "model": p.model, "model_version": p.model_version, "run_id": p.run_id,
            "partition": p.partition, "scored_at": p.scored_at.isoformat(timespec="microseconds"), "age": age,
            "stale": stale, "prediction": p.prediction, "label": p.label, "scores": p.scores,
            "version_current": p.version_current, "source": "precomputed"}


def models(service: Service, name: str | None = None) -> list[dict[str, Any]]:
    """Every model (or the one named): versions, current version, published runs, freshness."""
    versions, runs = service.read(lambda conn: (registry.list_models(conn, name), lookups.published_runs(conn, name)))
    if name is not None and not versions:
        raise NotFound(f"no model named {name!r} is registered")
    by_model: dict[str, list[PublishedRun]] = {m: list(rs) for m, rs in groupby(runs, key=lambda r: r.model)}
    overview = []
    for model, model_versions in groupby(versions, key=lambda v: v.name):
        listed = list(model_versions)
        partitions = [_partition(service, r) for r in by_model.get(model, [])]
        current = next((v.version for v in listed if "current" in v.aliases), None)
        overview.append({
            "name": model,
            "current_version": current,
            "versions": [{"version": v.version, "task": v.task, "classes": v.classes, "aliases": list(v.aliases),
                          "created_at": v.created_at.isoformat()} for v in listed],
            "partitions": partitions,
            "freshness": _freshness(service, model, by_model.get(model, [])),
        })
    return overview


def readiness(service: Service) -> dict[str, str]:
    """Raise unless the database answers and its schema is at head."""
    service.read(migrate.check_current)
    return {"status": "ready", "revision": migrate.head_revision()}


def _partition(service: Service, run: PublishedRun) -> dict[str, Any]:
    age, stale = _age(service, run.model, run.scored_at)
    return {"partition": run.partition, "run_id": run.run_id, "model_version": run.model_version, "rows": run.rows,
            "scored_at": run.scored_at.isoformat(), "published_at": run.published_at.isoformat(), "age": age,
            "stale": stale}


def _freshness(service: Service, model: str, runs: list[PublishedRun]) -> dict[str, Any]:
    max_age = service.settings.max_age(model)
    if not runs:
        return {"last_published_at": None, "oldest_scored_at": None, "age": None, "max_age": max_age,
                "stale": False}
    oldest = min(r.scored_at for r in runs)
    age, stale = _age(service, model, oldest)
    return {"last_published_at": max(r.published_at for r in runs).isoformat(),
            "oldest_scored_at": oldest.isoformat(), "age": age, "max_age": max_age, "stale": stale}


def _age(service: Service, model: str, scored_at: datetime) -> tuple[float, bool]:
    age = round(max(0.0, service.clock() - scored_at.timestamp()), 3)
    max_age = service.settings.max_age(model)
    return age, max_age is not None and age > max_age
