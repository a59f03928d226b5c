"""`predstore schedule` and `predstore jobs`: thin commands over `scheduler.daemon`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from store import schedules
from store.db import connect
from store.migrate import prepare
from store.settings import Settings

if TYPE_CHECKING:  # the scheduler (APScheduler, the jobs it fires) loads inside the commands that use it
    from scheduler.config import Job

CONFIG_HELP = "The schedule file (TOML); see schedule.example.toml."


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2026-03-01T02:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--once", is_flag=True, help="Score what has arrived, run the cron firings that are due and were "
              "not run, then exit (for system cron, a Kubernetes CronJob or Airflow).")
@click.option("--now", callback=_instant, metavar="TIME", help="With --once: evaluate cron schedules as if it "
              "were TIME (ISO 8601; UTC unless it has an offset), to replay or simulate days.")
@click.pass_obj
def schedule(settings: Settings, config_path: Path, once: bool, now: datetime | None) -> None:
    """Run the scheduler: cron and on-arrival jobs from the config, exactly once across replicas.

    Runs until SIGTERM or Ctrl-C (the partition being scored is finished first). Exit status:
    0 done, 1 a job failed (--once), 2 invalid config or store unavailable.
    """
    if now is not None and not once:
        raise click.UsageError("--now goes with --once")
    from scheduler.config import load_config
    from scheduler.daemon import run_once, serve

    config = load_config(config_path)
    if any(job.kind == "monitor" for job in config.jobs):
        from monitor.config import MonitorConfig

        MonitorConfig.from_env()  # a bad webhook or monitor config fails at start, not at every firing
    if once:
        outcomes = run_once(settings, config, now=now)
        click.echo(", ".join(f"{job_id}: {outcome}" for job_id, outcome in outcomes.items()))
        return
    serve(settings, config)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_obj
def jobs(settings: Settings, config_path: Path, as_json: bool) -> None:
    """List the config's jobs with their schedule, next firing, last firing and its outcome."""
    from scheduler.config import load_config

    config = load_config(config_path)
    with connect(prepare(settings), autocommit=True) as conn:
        last = schedules.last_firings(conn, [j.id for j in config.jobs])
    now = datetime.now(UTC)
    rows = [_row(job, last.get(job.id), now) for job in config.jobs]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(f"{'JOB':<20} {'KIND':<8} {'MODEL':<16} {'NEXT':<26} {'LAST':<26} STATUS")
    for r in rows:
        click.echo(f"{r['job']:<20} {r['kind']:<8} {r['model']:<16} {r['next']:<26} {r['last'] or '-':<26} "
                   f"{r['status'] or 'never ran'}")
        click.echo(f"{'':<20} {r['schedule']}")


def _row(job: Job, last: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    if job.on_arrival:
        upcoming = f"polls every {job.poll_interval:g}s"
    else:
        following = job.trigger().get_next_fire_time(None, now)
        upcoming = following.isoformat(timespec="minutes") if following else "never"
    status = None
    if last:
        summary = (last["details"] or {}).get("summary") or last["error"] or ""
        status = f"{last['status']} ({last['reason']}): {summary}" if summary else last["status"]
    return {
        "job": job.id,
        "kind": job.kind,
        "model": job.model,
        "schedule": job.describe(),
        "next": upcoming,
        "last": last["started_at"].astimezone(UTC).isoformat(timespec="seconds") if last else None,
        "status": status,
        "on_alert": job.on_alert,
    }
