"""The scheduler process: APScheduler's BlockingScheduler over the config's jobs, or one pass (--once).

Job definitions live in the config file and are rebuilt at each start, with stable ids (the job
names). Nothing about what has run lives in this process: firings and runs are in PostgreSQL, so
any number of replicas may start, stop and restart.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.config import ScheduleConfig, check_models
from scheduler.jobs import Context, apply_retention, fire, plural
from scheduler.metrics import HEARTBEAT_SECONDS, RETENTION, SchedulerMetrics
from store import ledger, logs, schedules
from store.db import connect
from store.errors import JobsFailed
from store.migrate import prepare
from store.settings import Settings

log = logging.getLogger("predstore.scheduler.daemon")

#: The signals that stop the scheduler.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def start(settings: Settings, config: ScheduleConfig) -> tuple[Context, SchedulerMetrics]:
    """Check the config against the store and tidy what a dead scheduler left; nothing runs yet.
    The metrics start from each job's last success recorded in the store."""
    url = prepare(settings)
    with connect(url, autocommit=True, application_name="predstore-schedule") as conn:
        check_models(config, conn)
        for run_id in ledger.reap_abandoned(conn):
            log.warning("run %s was left running by a process that died; marked abandoned", run_id)
        for firing_id in schedules.reap_firings(conn):
            log.warning("firing %s was left running by a scheduler that died; marked abandoned", firing_id)
        last_success = schedules.last_successes(conn, [job.id for job in config.jobs])
    metrics = SchedulerMetrics(settings, [*(job.id for job in config.jobs), RETENTION], last_success=last_success)
    return Context(settings=settings, url=url, config=config), metrics


def run_once(settings: Settings, config: ScheduleConfig, *, now: datetime | None = None,
             stop: threading.Event | None = None) -> dict[str, str]:
    """Run every job once: score what has arrived, run each cron firing that is due and was not run.

    Score jobs run before monitor jobs, so that the monitor sees this pass's predictions; the
    retention pass comes last. SIGTERM and SIGINT end the pass early (and set ``stop``, if given,
    so that a caller running passes in a loop can end it too); the handlers found are put back
    when it returns. Raises `JobsFailed` if any failed.
    """
    ctx, metrics = start(settings, config)
    if stop is not None:
        ctx.stop = stop
    outcomes: dict[str, str] = {}
    with _stopped_by_signals(lambda: None, ctx.stop):
        for job in sorted(config.jobs, key=lambda j: j.kind != "score"):
            if ctx.stop.is_set():
                break
            with logs.context(job_id=job.id, model=job.model):
                outcomes[job.id] = fire(ctx, job.id, now=now)
            metrics.record(job.id, outcomes[job.id])
        metrics.record(RETENTION, apply_retention(ctx, now=now))
        metrics.beat()
    failed = [job_id for job_id, outcome in outcomes.items() if outcome == "failed"]
    if failed:
        raise JobsFailed(f"{len(failed)} of {len(config.jobs)} jobs failed: {', '.join(failed)}; "
                         "the log above and `predstore jobs` say why")
    return outcomes


def serve(settings: Settings, config: ScheduleConfig) -> None:
    """Run the scheduler until SIGTERM or SIGINT; each job fires once at start to catch up."""
    ctx, metrics = start(settings, config)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # jobs log what fired; _on_event what did not
    executor = ThreadPoolExecutor(max_workers=min(len(config.jobs) + 1, 8))
    scheduler = BlockingScheduler(
        timezone=UTC,
        executors={"default": executor, "heartbeat": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": config.misfire_grace_time},
    )
    now = datetime.now(UTC)
    for job in config.jobs:
        if not job.on_arrival and job.cron is None:  # a retrain job fired by its model's alerts alone
            log.info("job %s: %s %s, %s", job.id, job.kind, job.model, job.describe())
            continue
        trigger = IntervalTrigger(seconds=job.poll_interval) if job.on_arrival else job.trigger()
        scheduler.add_job(_fire, trigger, args=[ctx, metrics, job.id], id=job.id, name=f"{job.kind} {job.model}",
                          next_run_time=now)
        log.info("job %s: %s %s, %s", job.id, job.kind, job.model, job.describe())
    # Retention once a day (and at start), whatever the jobs: runs past their model's age limit go.
    scheduler.add_job(_retain, IntervalTrigger(days=1), args=[ctx, metrics], id=RETENTION, name=RETENTION,
                      next_run_time=now)
    # The heartbeat has a thread of its own: jobs busy in every worker do not stop it, a stuck scheduler does.
    scheduler.add_job(metrics.beat, IntervalTrigger(seconds=HEARTBEAT_SECONDS), id="heartbeat", name="heartbeat",
                      executor="heartbeat", next_run_time=now)
    scheduler.add_listener(_on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    with _stopped_by_signals(lambda: scheduler.shutdown(wait=False) if scheduler.running else None, ctx.stop):
        log.info("scheduler started (pid %d) with %s from %s; each job fires once now to catch up", os.getpid(),
                 plural(len(config.jobs), "job"), config.path)
        if not ctx.stop.is_set():
            scheduler.start()
        executor.shutdown(wait=True)
    log.info("scheduler stopped")


def _fire(ctx: Context, metrics: SchedulerMetrics, job_id: str) -> None:
    """Fire ``job_id``: its lines carry the job and its model (`store.logs.context`)."""
    model = next(job.model for job in ctx.config.jobs if job.id == job_id)
    with logs.context(job_id=job_id, model=model):
        metrics.record(job_id, fire(ctx, job_id))


def _retain(ctx: Context, metrics: SchedulerMetrics) -> None:
    metrics.record(RETENTION, apply_retention(ctx))


def _on_event(event: JobExecutionEvent) -> None:
    if event.code == EVENT_JOB_MISSED:
        log.warning("job %s: the firing of %s was missed by more than misfire_grace_time; the next firing "
                    "(or the next start) catches up", event.job_id, event.scheduled_run_time)
    else:
        log.debug("job %s: still running its previous firing; this one is skipped", event.job_id)


@contextmanager
def _stopped_by_signals(shutdown: Callable[[], object], stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT stop the scheduler while the block runs (`_on_signals`); the handlers
    found are put back after, so that a process that goes on (`predstore demo --serve`) is
    stopped by its own handlers and not by a dead scheduler's."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _on_signals(shutdown, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler not set from Python; the default stands in
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _on_signals(shutdown: Callable[[], object], stop: threading.Event) -> None:
    """SIGTERM and SIGINT stop the scheduler: running jobs finish the partition they are scoring
    and start no other; a second signal exits at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: exiting now; an unfinished run is marked abandoned by the next scheduler "
                        "start or the next run of its partition", name)
            os._exit(128 + signum)
        log.info("%s: stopping; running jobs finish the partition in hand and start nothing new", name)
        stop.set()
        shutdown()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
