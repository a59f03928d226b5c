"""The scheduler: maps cron schedules and new-data arrival to the jobs' entry points.

`load_config` reads and checks a schedule file; `serve` runs it under APScheduler until SIGTERM;
`run_once` runs what is due and exits. What has run lives in PostgreSQL (``job_firings`` and the
runs ledger), so replicas and restarts agree on it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config import Job, ScheduleConfig, load_config
    from scheduler.daemon import run_once, serve
    from store.errors import JobsFailed

__all__ = ["Job", "JobsFailed", "ScheduleConfig", "load_config", "run_once", "serve"]

#: Where each public name lives; imported on first use, so `predstore --help` does not load APScheduler.
_HOMES = {"Job": "scheduler.config", "ScheduleConfig": "scheduler.config", "load_config": "scheduler.config",
          "JobsFailed": "store.errors", "run_once": "scheduler.daemon", "serve": "scheduler.daemon"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
