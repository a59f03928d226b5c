"""The ``retrain`` job: close the loop from what was scored to the next version.

A firing first weighs the challenger it made before, if one is waiting: on the labels that have
arrived it promotes it (``promote = "if-better"``, the anytime verdict of `monitor.compare`) or,
past ``retire_after_days`` without a verdict that promotes, retires it. With no challenger waiting
it builds the point-in-time training set of the labels since the current version was registered
(`models.training`), holds out its newest ``validation_share`` by event time, fits the user's
``fit(frame, target)`` (or runs its ``command``) in a subprocess with a timeout, and registers the
result as the challenger: the held-out rows as its validation data (metrics and the output baseline), the rest as its
training baseline; the next scoring runs shadow it. What triggered it goes to the audit trail.
One replica at a time per model (an advisory lock); a failure is one line and a failed firing, and
registration is one transaction, so no version is ever half-registered.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from scheduler.config import Job
from scheduler.jobs import Context, Tally, control, finish
from store import audit, registry, schedules
from store.errors import JobError, NotFound, PredstoreError, first_line
from store.settings import Settings

log = logging.getLogger("predstore.scheduler.retrain")

#: Labeled predictions needed before a model is fitted.
MIN_ROWS = 50
#: The child process that fits: it imports ``module:function``, reads the training rows, saves skops.
FIT = """
import importlib, sys
sys.path.insert(0, sys.argv[5])
import pandas as pd, skops.io as sio
module, _, name = sys.argv[1].partition(":")
fit = getattr(importlib.import_module(module), name)
sio.dump(fit(pd.read_parquet(sys.argv[2]), sys.argv[3]), sys.argv[4])
"""


def fire_retrain(ctx: Context, job: Job, conn: psycopg.Connection, tally: Tally, *, trigger: dict[str, Any]) -> None:
    """One retrain firing (of cron, or of `after_monitor`), recorded in ``tally``."""
    tally.attempts += 1
    tally.record(job.model, **retrain(ctx.settings, job, conn, cwd=ctx.config.path.parent, trigger=trigger))


def after_monitor(ctx: Context, model: str, alerts: list[dict[str, Any]]) -> None:
    """Fire each retrain job of ``model`` that the monitor run just finished calls for: it raised an
    alert of the job's ``on_alert`` kinds, as did the ``after - 1`` monitor runs before it (an 'alert'
    firing), or labels arrived
    since the job last fired while its challenger waits for a verdict, or ``every_labels`` of them
    did (an 'arrival' firing: the labels' arrival)."""
    for job in ctx.config.jobs:
        if job.kind != "retrain" or job.model != model:
            continue
        wanted = set(job.alert_kinds) | ({"concept_drift", "estimated_performance"}
                                         if "performance" in job.alert_kinds else set())
        matching = [a for a in alerts if a.get("kind") in wanted]
        with control(ctx) as conn:
            if matching and _streak(ctx, conn, job, wanted):
                reason = "alert"
                trigger: dict[str, Any] = {"alerts": [{k: a.get(k) for k in ("alert_id", "kind", "scope", "message",
                                                                             "details")} for a in matching]}
            else:
                last = schedules.last_firings(conn, [job.id]).get(job.id)
                arrived = schedules.labels_arrived(conn, model, since=last["started_at"] if last else None)
                waiting = registry.aliases(conn, model).get("challenger") is not None
                if not arrived or not (waiting or (job.every_labels and arrived >= job.every_labels)):
                    continue
                reason, trigger = "arrival", {"labels_arrived": arrived}
            firing_id = schedules.claim_firing(conn, job_id=job.id, reason=reason, scheduled_for=None,
                                               host=socket.gethostname(), pid=os.getpid())
            assert firing_id is not None  # alert and arrival firings have no scheduled time, so never conflict
            log.info("job %s fired (%s of %s): %s", job.id, reason, model, trigger.get("labels_arrived") or
                     ", ".join(a["kind"] for a in trigger["alerts"]))
            tally = Tally()
            try:
                fire_retrain(ctx, job, conn, tally, trigger=trigger)
            except (PredstoreError, psycopg.Error) as exc:
                tally.error = first_line(exc)
            except Exception as exc:  # the monitor job that called for it outlives the retrain's bug
                log.exception("job %s crashed", job.id)
                tally.error = f"crashed: {type(exc).__name__}: {exc}"
            finally:
                finish(conn, job, firing_id, tally)


def _streak(ctx: Context, conn: psycopg.Connection, job: Job, wanted: set[str]) -> bool:
    """Whether the ``job.after - 1`` monitor runs of the model before this one raised such alerts too."""
    if job.after <= 1:
        return True
    monitors = [j.id for j in ctx.config.jobs if j.kind == "monitor" and j.model == job.model]
    before = schedules.recent_outcomes(conn, monitors, job.model, limit=job.after - 1)
    return len(before) == job.after - 1 and all(wanted & set(o.get("kinds", [])) for o in before)


def retrain(settings: Settings, job: Job, conn: psycopg.Connection, *, cwd: Path, trigger: dict[str, Any],
            now: datetime | None = None) -> dict[str, Any]:
    """One firing of a retrain job; returns what it did (``status`` and details) for the firing's record."""
    if not schedules.try_lock(conn, f"retrain:{job.model}"):
        return {"status": "busy", "reason": "another replica is retraining this model"}
    now = now or datetime.now(UTC)
    current = registry.get_model(conn, job.model)
    try:
        challenger = registry.get_model(conn, job.model, alias="challenger")
    except NotFound:
        challenger = None
    if challenger is not None:
        return _weigh(settings, job, conn, challenger, now=now)
    return _fit(settings, job, conn, current, cwd=cwd, trigger=trigger, now=now)


def _weigh(settings: Settings, job: Job, conn: psycopg.Connection, challenger: registry.ModelVersion, *,
           now: datetime) -> dict[str, Any]:
    from models.promotion import promote_model
    from monitor.compare import compare_models

    evidence = compare_models(settings, job.model, min_labels=job.min_labels)
    if job.promote == "if-better" and evidence.verdict.promotes:
        promote_model(settings, job.model, actor=f"job {job.id}", evidence=evidence.to_dict())
        return {"status": "promoted", "version": challenger.version, "verdict": evidence.verdict.value}
    if now - challenger.created_at >= timedelta(days=job.retire_after_days):
        registry.remove_alias(conn, job.model, "challenger")
        audit.record(conn, "model.retire", target=f"{job.model} v{challenger.version}", actor=f"job {job.id}",
                     details={"verdict": evidence.verdict.value, "after_days": job.retire_after_days})
        return {"status": "retired", "version": challenger.version, "verdict": evidence.verdict.value}
    return {"status": "waiting", "version": challenger.version, "verdict": evidence.verdict.value}


def _fit(settings: Settings, job: Job, conn: psycopg.Connection, current: registry.ModelVersion, *, cwd: Path,
         trigger: dict[str, Any], now: datetime) -> dict[str, Any]:
    from models.promotion import promote_model
    from models.register import register_model
    from models.training import training_set

    since = now - timedelta(days=job.window_days) if job.window_days else current.created_at
    frame = training_set(conn, job.model, since=since)
    if len(frame) < MIN_ROWS:
        return {"status": "skipped", "reason": f"{len(frame)} labeled predictions since {since:%Y-%m-%d %H:%M}; "
                f"{MIN_ROWS} are needed"}
    target = "label_value" if current.task == "regression" else "label"
    features = current.feature_schema.names
    frame = frame.sort_values("event_time", kind="stable")
    held = max(1, round(len(frame) * job.validation_share))
    train, validation = frame.iloc[:-held], frame.iloc[-held:]
    with tempfile.TemporaryDirectory(prefix="predstore-retrain-") as tmp:
        paths = {name: Path(tmp) / f"{name}.parquet" for name in ("train", "validation")}
        for name, rows in (("train", train), ("validation", validation)):
            rows[[*features, target]].to_parquet(paths[name], index=False)
        artifact = _run_fit(job, paths["train"], target, Path(tmp) / f"{job.model}.skops", cwd=cwd)
        version = register_model(settings, artifact, name=job.model, train_data=paths["train"],
                                 validation_data=paths["validation"], target=target, actor=f"job {job.id}",
                                 entity_col=current.feature_schema.entity_col)
    promote_model(settings, job.model, version.version, alias="challenger", actor=f"job {job.id}")
    details = {"trigger": trigger, "since": since.isoformat(), "rows": len(frame),
               "validation_rows": held, "runs": sorted(int(r) for r in frame["run_id"].unique()),
               "label_window": [frame["event_time"].min().isoformat(), frame["event_time"].max().isoformat()]}
    audit.record(conn, "model.retrain", target=f"{job.model} v{version.version}", actor=f"job {job.id}",
                 details=details)
    return {"status": "registered", "version": version.version, **details}


def _run_fit(job: Job, train: Path, target: str, artifact: Path, *, cwd: Path) -> Path:
    """Run the user's ``fit`` (or ``command``) in a child process; returns the .skops file it wrote,
    or raises `JobError` with its last line."""
    if job.command:
        env = {**os.environ, "PREDSTORE_TRAINING_SET": str(train), "PREDSTORE_TARGET": target,
               "PREDSTORE_MODEL": job.model, "PREDSTORE_JOB_ID": job.id}
        args: Any = job.command
    else:
        env, args = None, [sys.executable, "-c", FIT, job.train or "", str(train), target, str(artifact), str(cwd)]
    what = job.command or job.train
    try:
        done = subprocess.run(args, shell=bool(job.command), cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=job.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise JobError(f"job {job.id}: {what} ran longer than {job.timeout:g}s and was stopped") from None
    if job.command and done.returncode == 0:
        printed = (done.stdout.strip().splitlines() or [""])[-1].strip()
        artifact = (cwd / printed) if printed else artifact
        if not printed or not artifact.is_file():
            raise JobError(f"job {job.id}: {what} printed no .skops file it wrote (its last line of output must "
                           "be the path)")
    if done.returncode != 0 or not artifact.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise JobError(f"job {job.id}: {what} failed (exit {done.returncode}): {last}")
    return artifact
