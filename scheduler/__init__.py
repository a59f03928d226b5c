"""The scheduler: maps cron schedules and new-data arrival to the jobs' entry points.

`load_config` reads and checks a schedule file; `serve` runs it under APScheduler until SIGTERM;
`run_once` runs what is due and exits. What has run lives in PostgreSQL (``job_firings`` and the
runs ledger), so replicas and restarts agree on it.
"""

from scheduler.config import Job, ScheduleConfig, load_config
from scheduler.daemon import JobsFailed, run_once, serve

__all__ = ["Job", "JobsFailed", "ScheduleConfig", "load_config", "run_once", "serve"]
