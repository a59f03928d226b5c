"""Retention: by age (`predstore runs prune`, `predstore models retain`, the scheduler's daily
pass), and by count, as a run publishes (`drop_superseded`: ``PREDSTORE_KEEP_RUNS`` runs a partition).

Each run expires in a transaction of its own, oldest first: it leaves the serving directory and the
ledger says ``expired`` at the same commit, so a lookup answers from it or answers 404, never an
error. Its table is then detached (CONCURRENTLY: lookups of other runs go on) and dropped. A prune
that dies between the two leaves an ``expired`` run whose table is still there, and the next prune
drops it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from store import ledger, predictions, registry, retention, serving
from store.db import connect
from store.migrate import prepare
from store.retention import Expiring
from store.settings import Settings

log = logging.getLogger("predstore.batch.retention")


@dataclass(frozen=True)
class Pruned:
    """What a prune did (or, dry, would do)."""

    runs: tuple[Expiring, ...]
    dry_run: bool
    #: Entities no published run serves any more (404 from now on); 0 on a dry run.
    entities_unserved: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "runs": [asdict(r) | {"published_at": r.published_at.isoformat()}
                                                  for r in self.runs],
                "rows": sum(r.rows for r in self.runs), "bytes": sum(r.bytes for r in self.runs),
                "entities_unserved": self.entities_unserved}


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or ``2w`` as a timedelta; ValueError says what is accepted."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _UNITS or not number.isdigit() or int(number) < 1:
        raise ValueError(f"{text!r} is not a duration: write a positive whole number and a unit, "
                         "as in 90d, 12h, 30m, 45s or 2w")
    return timedelta(**{_UNITS[unit]: int(number)})


def prune_runs(settings: Settings, *, model: str | None = None, older_than: timedelta | None = None,
               dry_run: bool = False, now: datetime | None = None, pace: float = 0.0,
               stop: threading.Event | None = None) -> Pruned:
    """Expire the published runs past their model's age limit (``older_than`` overrides every
    policy) and drop their tables, and those of superseded runs as old.

    After each run it rests ``pace`` times as long as that run took, leaving the CPU and the
    disk to the lookups it shares them with (the scheduler's daily pass rests three times as long).
    Once ``stop`` is set it ends after the run in hand; the next prune drops the rest.
    """
    now = now or datetime.now(UTC)
    default = timedelta(days=settings.keep_days) if settings.keep_days else None
    with connect(prepare(settings), autocommit=True, application_name="predstore-prune") as conn:
        if model is not None:
            registry.get_model(conn, model)  # NotFound names the models there are
        due = retention.expiring(conn, now=now, default=default, override=older_than, model=model)
        if dry_run:
            return Pruned(runs=tuple(due), dry_run=True)
        unserved = 0
        done: list[Expiring] = []
        stop = stop or threading.Event()
        for run in due:
            if stop.is_set():
                log.info("retention stopped after %s of %s runs; the next prune drops the rest", len(done), len(due))
                break
            started = time.perf_counter()
            with conn.transaction():
                unserved += retention.expire(conn, [run])
            predictions.drop_run_table(conn, run.run_id)
            done.append(run)
            log.info("dropped run %s (%s, partition %r, published %s)", run.run_id, run.model, run.partition,
                     run.published_at.isoformat(timespec="seconds"))
            stop.wait(pace * (time.perf_counter() - started))
        serving.drop_retired(conn)
    return Pruned(runs=tuple(done), dry_run=False, entities_unserved=unserved)


def drop_superseded(control: psycopg.Connection, model_name: str, partition_key: str, *, keep: int,
                    role: str) -> None:
    """Drop the tables of the partition's superseded runs beyond the newest ``keep`` (of ``role``)."""
    for old in ledger.superseded_runs(control, model_name, partition_key, keep=keep, role=role):
        predictions.drop_run_table(control, old)
        if not ledger.mark_dropped(control, old):
            continue
        log.info("dropped the rows of superseded run %s (keeping %s runs per partition)", old, keep)
