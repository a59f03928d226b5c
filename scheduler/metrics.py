"""The scheduler's figures for Prometheus: firings by job and outcome, each job's last success, a heartbeat.

They go where the jobs' own figures go (`store.prometheus.publish`: a textfile-collector file, and a
Pushgateway group per scheduler host), rewritten after each firing that did something and at each
heartbeat. A scheduler that is hung, killed or gone stops beating: alert on
``time() - predstore_scheduler_heartbeat_timestamp_seconds > 120``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from store.prometheus import publish
from store.settings import Settings

#: The outcomes of a firing counted (`scheduler.jobs.fire`; `scheduler.jobs.OUTCOMES` maps errors to them):
#: idle is nothing to do, or another replica's firing.
COUNTED = ("idle", "succeeded", "failed")
#: Seconds between heartbeats.
HEARTBEAT_SECONDS = 30.0
#: The name the daily retention pass is counted under.
RETENTION = "retention"


class SchedulerMetrics:
    """One scheduler process's counters and gauges, published as group ``instance=<host>``."""

    def __init__(self, settings: Settings, job_ids: Iterable[str], *, last_success: Mapping[str, datetime],
                 clock: Callable[[], float] = time.time, host: str | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.group = {"instance": host or socket.gethostname()}
        self.registry = CollectorRegistry()
        self.firings = Counter("predstore_scheduler_firings", "Firings of each job by outcome (idle: nothing to "
                               "do, or another replica's).", ["job_id", "outcome"], registry=self.registry)
        self.last_success = Gauge("predstore_scheduler_last_success_timestamp_seconds", "When each job last "
                                  "ran a firing that succeeded.", ["job_id"], registry=self.registry)
        self.heartbeat = Gauge("predstore_scheduler_heartbeat_timestamp_seconds", "When the scheduler last beat.",
                               registry=self.registry)
        self._lock = threading.Lock()
        for job_id in job_ids:  # every series from the start, so that rate() sees the first firing
            for outcome in COUNTED:
                self.firings.labels(job_id, outcome)
        for job_id, when in last_success.items():
            self.last_success.labels(job_id).set(when.timestamp())

    def record(self, job_id: str, outcome: str) -> None:
        """Count one firing of ``job_id``; publish unless it was idle (the next heartbeat will)."""
        self.firings.labels(job_id, outcome if outcome in COUNTED else "failed").inc()
        if outcome == "succeeded":
            self.last_success.labels(job_id).set(self.clock())
        if outcome != "idle":
            self.beat()

    def beat(self) -> None:
        """Set the heartbeat to now and publish every figure."""
        self.heartbeat.set(self.clock())
        with self._lock:
            publish(self.settings, "scheduler", self.group, self.registry)
