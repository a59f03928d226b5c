"""One firing of a job: decide whether it is this replica's to run, run it with retries, record it.

Exactly once comes from PostgreSQL, never from this process's memory:

- a cron firing is claimed by inserting (job, scheduled time) into ``job_firings``; the unique
  index lets one replica win and the others pass;
- a partition is scored under an advisory lock on (model, partition), and only if the ledger has
  no published run of the current model version on the same content (its sha256 fingerprint);
  the scoring job itself refuses a second live run of the same partition.

`fire` is what APScheduler and ``--once`` call; it never raises, so no job can stop the scheduler.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.triggers.cron import CronTrigger

from batch.retention import prune_runs
from batch.runner import ScoreRequest, score_partition
from scheduler import hooks
from scheduler.config import Job, ScheduleConfig
from scheduler.scan import Cache, Found, scan
from store import ledger, registry, schedules
from store.db import connect
from store.errors import JobError, PredstoreError, RunFailed, RunHeld, RunInProgress, first_line, nearest
from store.settings import Settings

log = logging.getLogger("predstore.scheduler.jobs")

#: How far back a start looks for a cron firing that was missed while no scheduler ran.
CATCH_UP_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367))


#: What a firing records of a partition whose scoring raised an error (its nearest class here):
#: ``busy`` ends the firing's work on it, ``failed`` is retried.
OUTCOMES: dict[type[PredstoreError], str] = {
    RunInProgress: "busy",
    RunHeld: "held",
    PredstoreError: "failed",
}


@dataclass
class Context:
    """What every firing of one scheduler process shares: settings, the store, the stop signal,
    and per-job memory that only saves work (fingerprints, messages already logged)."""

    settings: Settings
    url: str
    config: ScheduleConfig
    stop: threading.Event = field(default_factory=threading.Event)
    caches: dict[str, Cache] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)
    trouble: dict[str, str] = field(default_factory=dict)


@dataclass
class Tally:
    """What one firing did, partition by partition, for the log, the ledger and the exit status."""

    firing_id: int | None = None
    attempts: int = 0
    current: int = 0
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def record(self, key: str, status: str, **detail: Any) -> None:
        self.outcomes[key] = {"status": status, **{k: v for k, v in detail.items() if v is not None}}

    @property
    def failed(self) -> bool:
        return self.error is not None or any(o["status"] == "failed" for o in self.outcomes.values())

    def summary(self) -> str:
        if self.error:
            return self.error
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
        done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        if self.current:
            done += f"{', ' if done else ''}{self.current} already scored with the current model version"
        return done or "nothing to do"


def fire(ctx: Context, job_id: str, *, now: datetime | None = None) -> str:
    """Run one firing of ``job_id`` if it is this replica's; returns 'idle', 'succeeded' or 'failed'.

    ``now`` is the clock seam: a cron job runs its latest firing due at ``now`` if none ran it.
    """
    job = ctx.config.job(job_id)
    if not job.on_arrival and job.cron is None:
        return "idle"  # a retrain job fired by alerts alone: the monitor job fires it
    try:
        outcome = _poll(ctx, job) if job.on_arrival else _fire_cron(ctx, job, now or datetime.now(UTC))
    except (PredstoreError, psycopg.Error) as exc:
        problem = first_line(exc)
        if ctx.trouble.get(job.id) != problem:  # a poll meets the same problem every few seconds: say it once
            log.error("job %s could not run: %s", job.id, problem)
            ctx.trouble[job.id] = problem
    except Exception:  # the scheduler outlives any job's bug; the traceback is for whoever reports it
        log.exception("job %s crashed; the scheduler goes on", job.id)
    else:
        if ctx.trouble.pop(job.id, None):
            log.info("job %s runs again", job.id)
        return outcome
    return "failed"


def apply_retention(ctx: Context, *, now: datetime | None = None) -> str:
    """The daily retention pass (`predstore runs prune` with each model's policy), by one replica at a
    time; returns 'idle', 'succeeded' or 'failed' and, like `fire`, never raises."""
    try:
        with control(ctx) as conn:
            if not schedules.try_lock(conn, "retention"):
                return "idle"  # another replica is pruning
            # No hurry: working a quarter of the time is gentle on lookups; a stopping scheduler
            # ends after the run in hand.
            pruned = prune_runs(ctx.settings, now=now, pace=3.0, stop=ctx.stop)
    except (PredstoreError, psycopg.Error) as exc:
        log.error("retention could not run: %s", first_line(exc))
        return "failed"
    if not pruned.runs:
        return "idle"
    log.info("retention dropped %s (%s rows); %s no longer served", plural(len(pruned.runs), "run"),
             f"{sum(r.rows for r in pruned.runs):,}", plural(pruned.entities_unserved, "entity"))
    return "succeeded"


def outcome_of(exc: PredstoreError) -> str:
    """What a firing records of a partition whose scoring raised ``exc``: `OUTCOMES`' entry for its
    nearest class."""
    return nearest(OUTCOMES, exc) or "failed"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def latest_due(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` (None if none in the last year)."""
    for window in CATCH_UP_WINDOWS:
        due = trigger.get_next_fire_time(None, now - window)
        if due is None or due > now:
            continue
        while (later := trigger.get_next_fire_time(due, due + timedelta(microseconds=1))) and later <= now:
            due = later
        return due
    return None


def _fire_cron(ctx: Context, job: Job, now: datetime) -> str:
    due = latest_due(job.trigger(), now)
    if due is None:
        return "idle"
    late = (now - due).total_seconds() > ctx.config.misfire_grace_time
    reason = "catch-up" if late else "cron"
    with control(ctx) as conn:
        firing_id = schedules.claim_firing(conn, job_id=job.id, reason=reason, scheduled_for=due,
                                           host=socket.gethostname(), pid=os.getpid())
        if firing_id is None:
            log.debug("job %s: the firing of %s was run by another scheduler", job.id, due.isoformat())
            return "idle"
        why = f"missed firing of {due.isoformat()}, run late" if late else f"scheduled for {due.isoformat()}"
        log.info("job %s fired (%s %s; %s): %s %s", job.id, job.cron, job.timezone, why, job.kind, job.model)
        tally = Tally()
        try:
            if job.kind == "score":
                _score_found(ctx, job, conn, scan(job.input or "", ctx.caches.setdefault(job.id, {})), tally)
            elif job.kind == "retrain":
                from scheduler.retrain import fire_retrain

                fire_retrain(ctx, job, conn, tally, trigger={"cron": job.cron, "scheduled_for": due.isoformat()})
            else:
                _monitor(ctx, job, tally)
        except PredstoreError as exc:
            tally.error = str(exc)
        finally:
            finish(conn, job, firing_id, tally)
    return "failed" if tally.failed else "succeeded"


def _poll(ctx: Context, job: Job) -> str:
    found = scan(job.input or "", ctx.caches.setdefault(job.id, {}))
    if not found:
        return "idle"
    tally = Tally()
    with control(ctx) as conn:
        try:
            _score_found(ctx, job, conn, found, tally, claim_as="arrival")
        except PredstoreError as exc:
            if tally.firing_id is None:
                raise
            tally.error = str(exc)
        finally:
            if tally.firing_id is not None:
                finish(conn, job, tally.firing_id, tally)
    if tally.firing_id is None:
        return "idle"
    return "failed" if tally.failed else "succeeded"


def _score_found(ctx: Context, job: Job, conn: psycopg.Connection, found: list[Found], tally: Tally,
                 *, claim_as: str | None = None) -> None:
    """Score each found partition that is new to the current model version and free to take.

    With ``claim_as``, a firing is claimed (into ``tally.firing_id``) when the first partition
    turns out to need scoring, so that polls that find nothing new leave no rows.
    """
    model = registry.get_model(conn, job.model)
    scored = schedules.published_inputs(conn, model.name)
    for partition in found:
        if ledger.is_current(scored.get(partition.key), model.version, partition.fingerprint):
            tally.current += 1
            continue
        if ctx.stop.is_set():
            tally.record(partition.key, "not started", reason="the scheduler is stopping")
            continue
        lock = f"score:{job.model}:{partition.key}"
        if not schedules.try_lock(conn, lock):
            log.debug("job %s: %s is being scored by another process", job.id, partition.key)
            continue
        try:
            if _done(conn, model, partition):  # finished by another replica before we took the lock
                continue
            failed = schedules.failed_attempts(conn, model_name=model.name, model_version=model.version,
                                               partition_key=partition.key, input_fingerprint=partition.fingerprint)
            if failed > job.retries:
                tally.record(partition.key, "given up", failed_runs=failed)
                _say_once(ctx, f"job {job.id}: {partition.key} failed {plural(failed, 'time')} with {model.name} "
                          f"v{model.version}; leaving it until its content or the model changes "
                          f"(`predstore runs list --model {model.name}` shows why)")
                continue
            if claim_as and tally.firing_id is None:
                tally.firing_id = schedules.claim_firing(conn, job_id=job.id, reason=claim_as, scheduled_for=None,
                                                   host=socket.gethostname(), pid=os.getpid())
                log.info("job %s fired (new data: %s in %s): scoring with %s v%s", job.id, partition.key, job.input,
                         model.name, model.version)
            _score_with_retries(ctx, job, partition, first_attempt=failed + 1, tally=tally)
        finally:
            schedules.unlock(conn, lock)


def _done(conn: psycopg.Connection, model: registry.ModelVersion, partition: Found) -> bool:
    return ledger.is_current(ledger.find_published(conn, model.name, partition.key), model.version,
                             partition.fingerprint)


def _score_with_retries(ctx: Context, job: Job, partition: Found, *, first_attempt: int, tally: Tally) -> None:
    last = job.retries + 1
    request = ScoreRequest(path=partition.path, model_name=job.model, partition_key=partition.key,
                           entity_col=job.entity_col, max_reject_fraction=job.max_reject_fraction,
                           snapshot=job.snapshot, gate=job.gate, max_row_change=job.max_row_change)
    made = first_attempt - 1
    for attempt in attempts(ctx, job, partition.key, first=first_attempt):
        made = attempt
        tally.attempts += 1
        try:
            result = score_partition(ctx.settings, request)
        except PredstoreError as exc:
            run_id = exc.run_id if isinstance(exc, RunFailed | RunInProgress) else None
            if outcome_of(exc) in ("busy", "held"):  # neither is retried: held content waits for a person
                log.log(logging.WARNING if outcome_of(exc) == "held" else logging.INFO, "job %s: %s", job.id, exc)
                tally.record(partition.key, outcome_of(exc), run_id=run_id)
                return
            then = "giving up until its content or the model changes" if attempt == last else "will retry"
            log.warning("job %s: %s attempt %d of %d failed (%s): %s", job.id, partition.key, attempt, last, then,
                        exc, extra={"partition": partition.key, "run_id": run_id})
            tally.record(partition.key, "failed", attempts=attempt, run_id=run_id, error=str(exc))
            continue
        log.info("job %s: %s: %s", job.id, partition.key, result.message,
                 extra={"partition": partition.key, "run_id": result.run_id})
        tally.record(partition.key, result.status, attempts=attempt, run_id=result.run_id)
        return
    if made < last:  # the scheduler stopped while it waited to retry
        tally.record(partition.key, "failed", attempts=made, error="stopped before its retry")


def attempts(ctx: Context, job: Job, what: str, *, first: int = 1) -> Iterator[int]:
    """The numbers of the attempts at ``what`` from ``first`` to the job's ``retries`` + 1, waiting
    ``backoff`` seconds (doubled each time) before each retry; ends early once the scheduler stops."""
    for attempt in range(first, job.retries + 2):
        if attempt > first:
            delay = job.backoff * 2 ** max(attempt - 2, 0)
            log.info("job %s: retrying %s in %gs (attempt %d of %d)", job.id, what, delay, attempt, job.retries + 1)
            if ctx.stop.wait(delay):
                return
        yield attempt


def _monitor(ctx: Context, job: Job, tally: Tally) -> None:
    try:
        from monitor.runner import run_monitor  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise JobError(f"the monitor is not available in this installation ({exc}); "
                       f"monitor job {job.id} cannot run") from exc
    last = job.retries + 1
    for attempt in attempts(ctx, job, f"monitoring {job.model}"):
        tally.attempts += 1
        try:
            result = run_monitor(ctx.settings, job.model)
        except PredstoreError as exc:
            log.warning("job %s: monitoring %s, attempt %d of %d failed: %s", job.id, job.model, attempt, last, exc)
            tally.record(job.model, "failed", attempts=attempt, error=str(exc))
            continue
        alerts = hooks.alerts_of(result)
        log.info("job %s: monitored %s: %d alert(s)", job.id, job.model, len(alerts))
        tally.record(job.model, "monitored", attempts=attempt, alerts=len(alerts),
                     kinds=sorted({str(a.get("kind")) for a in alerts}))
        for alert in alerts:
            _on_alert(ctx, job.model, alert)
        from scheduler.retrain import after_monitor

        after_monitor(ctx, job.model, alerts)
        return


def _on_alert(ctx: Context, model: str, alert: dict[str, Any]) -> None:
    """Run the ``on_alert`` command of every job of ``model``, each recorded as an 'alert' firing."""
    alert = {"model": model, **alert}
    for job in ctx.config.jobs:
        if job.on_alert is None or job.model != model:
            continue
        with control(ctx) as conn:
            firing_id = schedules.claim_firing(conn, job_id=job.id, reason="alert", scheduled_for=None,
                                               host=socket.gethostname(), pid=os.getpid())
            assert firing_id is not None  # alert firings have no scheduled time, so never conflict
            log.info("job %s fired (the monitor raised an alert for %s): running %r", job.id, model, job.on_alert)
            status = hooks.run_hook(job.on_alert, alert, cwd=ctx.config.path.parent, job_id=job.id)
            tally = Tally(attempts=1)
            tally.record("on_alert", "succeeded" if status == 0 else "failed", exit_status=status,
                         command=job.on_alert, alert=alert)
            if status != 0:
                tally.error = f"the on_alert command exited with status {status}"
            finish(conn, job, firing_id, tally)


def finish(conn: psycopg.Connection, job: Job, firing_id: int, tally: Tally) -> None:
    """Record the firing's outcome from ``tally`` and log it."""
    status = "failed" if tally.failed else "succeeded"
    summary = tally.summary()
    schedules.finish_firing(conn, firing_id, status=status, attempts=tally.attempts, error=tally.error,
                            details={"summary": summary, "outcomes": tally.outcomes})
    (log.warning if tally.failed else log.info)("job %s %s: %s", job.id, status, summary)


def _say_once(ctx: Context, message: str) -> None:
    """Log a notice that would repeat every poll only the first time."""
    if message not in ctx.said:
        ctx.said.add(message)
        log.error(message)


@contextmanager
def control(ctx: Context) -> Iterator[psycopg.Connection]:
    """The firing's own connection: its claims and locks live and die with it."""
    with connect(ctx.url, autocommit=True, application_name="predstore-schedule") as conn:
        yield conn
