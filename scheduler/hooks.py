"""The retraining hook: a job's ``on_alert`` command, run with the monitor's alert as JSON on stdin."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("predstore.scheduler.hooks")

#: A hook still running after this long is stopped and counted as failed.
HOOK_TIMEOUT_S = 3600


def alerts_of(result: Any) -> list[dict[str, Any]]:
    """The alerts a monitor run newly raised, as JSON-ready dicts.

    ``run_monitor`` returns an object or a mapping with an ``alerts`` sequence whose items are
    mappings, dataclasses or objects with ``to_dict()``; one marked ``new = False`` was raised
    by an earlier run, and its hook has already run.
    """
    alerts = result.get("alerts") if isinstance(result, Mapping) else getattr(result, "alerts", None)
    return [a for a in map(_as_dict, alerts or ()) if a.get("new", True) is not False]


def run_hook(command: str, alert: Mapping[str, Any], *, cwd: Path, job_id: str,
             timeout: float = HOOK_TIMEOUT_S) -> int:
    """Run ``command`` through the shell with ``alert`` as JSON on stdin; returns its exit status
    (-1 if it could not start or timed out). Its output goes to the scheduler's own."""
    env = {**os.environ, "PREDSTORE_JOB_ID": job_id, "PREDSTORE_ALERT_MODEL": str(alert.get("model", ""))}
    try:
        done = subprocess.run(command, shell=True, input=json.dumps(alert, default=str), text=True, cwd=cwd,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log.error("job %s: on_alert command %r ran longer than %ss and was stopped", job_id, command, timeout)
        return -1
    except OSError as exc:
        log.error("job %s: on_alert command %r could not start: %s", job_id, command, exc)
        return -1
    return done.returncode


def _as_dict(alert: Any) -> dict[str, Any]:
    if isinstance(alert, Mapping):
        return dict(alert)
    if dataclasses.is_dataclass(alert) and not isinstance(alert, type):
        return dataclasses.asdict(alert)
    if hasattr(alert, "to_dict"):
        return dict(alert.to_dict())
    return {"alert": str(alert)}
