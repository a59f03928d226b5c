"""What the lookup API knows and does: its resources (pool, cache, keys, listener, metrics) and the
answers it builds from `store`, applying the cache and the staleness policy. Views call these."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from store import apikeys, lookups, migrate, policies, registry
from store.apikeys import APIKEYS_CHANNEL
from store.db import database_url
from store.errors import NotFound, PredstoreError
from store.lookups import Prediction, PublishedRun
from store.predictions import PUBLISH_CHANNEL
from store.schema import MAX_ENTITY_ID_LENGTH
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
    #: Live scoring (`lookup_api.live`): the loaded models and the recorder; None while it is off.
    live: Any = None
    recorder: Any = None
    #: Per model: (its entity column, its on_miss policy, when read), read again after a notice.
    facts: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    def read(self, query: Callable[[psycopg.Connection], T]) -> T:
        """``query(conn)`` on a pooled connection; `StoreUnavailable` when the database is away."""
        return lookups.read(self.pool, query, timeout=self.settings.api_pool_timeout)

    def close(self) -> None:
        self.listener.stop()
        store_counts(self)
        if self.recorder is not None:
            self.recorder.stop()
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
            service.facts.pop(payload, None)
            if service.live is not None:
                service.live.invalidate(payload)
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
    live, recorder = _start_live(settings, pool, metrics) if settings.api_live_scoring else (None, None)
    service = Service(settings, pool, cache, keys, metrics, listener, clock, live=live, recorder=recorder)
    pool.open(wait=False)
    listener.start()
    return service


def _start_live(settings: Settings, pool: ConnectionPool, metrics: Metrics) -> tuple[Any, Any]:
    """Live scoring's loaded models (each loads at first use) and its recorder (a thread)."""
    from lookup_api import live
    from store import live as live_rows

    def read(query: Callable[[psycopg.Connection], T]) -> T:
        return lookups.read(pool, query, timeout=settings.api_pool_timeout)

    def write(rows: list[live_rows.LivePrediction]) -> None:
        read(lambda conn: live_rows.add(conn, rows))

    return live.LiveModels(read), live.Recorder(write, capacity=settings.api_live_queue,
                                                on_written=lambda n: metrics.count_live("recorded", n),
                                                on_dropped=lambda n: metrics.count_live("dropped", n))


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
    answers, missing = _lookup(service, model, entity_ids, version=version)
    return '{"predictions":[' + ",".join(answers) + '],"missing":' + json.dumps(missing) + "}"


def _lookup(service: Service, model: str, entity_ids: Sequence[str], *, version: int | None
            ) -> tuple[list[str], list[str]]:
    """The JSON text of each entity's current prediction, and the entities with none."""
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
    return answers, missing


def score(service: Service, model: str, rows: list[dict[str, Any]], *, version: int | None) -> dict[str, Any]:
    """Score ``rows`` live with ``model``'s current version (or ``version``): the predictions and the
    rejected rows. `NotFound` while live scoring is off."""
    loaded, erasures = live_models(service).get(model, version)
    predictions, rejected = _scored(service, loaded, erasures, rows)
    return {"predictions": predictions, "rejected": rejected}


def predictions_for_rows(service: Service, model: str, rows: list[dict[str, Any]], *, on_miss: str | None,
                         version: int | None, may_score: Callable[[], None]) -> str:
    """A batch lookup that sends each entity's row: the store answers what it holds, and, when
    ``on_miss`` (or the model's policy) is ``score``, the rest are scored live from their rows
    (``may_score`` raises unless the request may). As JSON: predictions, missing, rejected."""
    entity_col, policy = model_facts(service, model)
    ids = [_entity_id(row.get("entity_id", row.get(entity_col))) for row in rows]
    rejected: list[dict[str, Any]] = [
        {"entity_id": None, "reason": f"rows[{i}] has no usable entity id (entity_id or {entity_col!r}: text "
                                      f"of 1 to {MAX_ENTITY_ID_LENGTH} characters, or a whole number)"}
        for i, e in enumerate(ids) if e is None]
    answers, missing = _lookup(service, model, list(dict.fromkeys(e for e in ids if e is not None)),
                               version=version)
    scored: list[dict[str, Any]] = []
    if (on_miss or policy) == "score" and missing:
        may_score()
        loaded, erasures = live_models(service).get(model, version)
        wanted = set(missing)
        scored, refused = _scored(service, loaded, erasures,
                                  [row for row, e in zip(rows, ids, strict=True) if e in wanted])
        rejected += refused
        done = {p["entity_id"] for p in scored} | {r["entity_id"] for r in refused}
        missing = [e for e in missing if e not in done]
    return ('{"predictions":[' + ",".join([*answers, *(json.dumps(p) for p in scored)]) + '],"missing":'
            + json.dumps(missing) + ',"rejected":' + json.dumps(rejected) + "}")


def _entity_id(value: Any) -> str | None:
    """A row's entity id as the store keys it, or None when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not text or len(text) > MAX_ENTITY_ID_LENGTH or "\x00" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def model_facts(service: Service, model: str) -> tuple[str, str]:
    """``model``'s entity column and on_miss policy; `NotFound` if it is not registered."""
    known = service.facts.get(model)
    if known is None or service.clock() - known[2] > 30.0:
        def query(conn: psycopg.Connection) -> tuple[str, str]:
            return (str(registry.get_model(conn, model).feature_schema.entity_col or "entity_id"),
                    policies.get_policy(conn, model).on_miss)

        entity_col, on_miss = service.read(query)
        known = service.facts[model] = (entity_col, on_miss, service.clock())
    return known[0], known[1]


def live_models(service: Service) -> Any:
    """The service's live models; `NotFound` while live scoring is off."""
    if service.live is None:
        raise NotFound("live scoring is off on this service; start it with `predstore serve --live-scoring` "
                       "(PREDSTORE_API_LIVE_SCORING=true)")
    return service.live


def _scored(service: Service, loaded: Any, erasures: Any, rows: list[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from lookup_api import live

    predictions, rejected, features = live.score(loaded, erasures, rows)
    service.recorder.add(predictions, features)
    service.metrics.count_live("scored", len(predictions))
    service.metrics.count_live("rejected", len(rejected))
    return predictions, rejected


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
