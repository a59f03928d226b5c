"""Prometheus figures of finished jobs, for a node_exporter textfile collector or a Pushgateway.

A batch job is gone before Prometheus could scrape it, so its latest figures are left where
Prometheus can find them: a ``.prom`` file per job and model in ``PREDSTORE_METRICS_DIR``, and/or
a push to ``PREDSTORE_PUSHGATEWAY_URL``. A failure to export is logged, never fatal to the job.
"""

from __future__ import annotations

import logging
import re
import resource
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from store.settings import Settings

log = logging.getLogger(__name__)


def export(settings: Settings, job: str, labels: Mapping[str, str], values: Mapping[str, float | None]) -> None:
    """Publish ``values`` (metric suffix -> value) as gauges ``predstore_{job}_{suffix}``, with
    ``labels``, plus the time of this export."""
    if not settings.metrics_dir and not settings.pushgateway_url:
        return
    registry = CollectorRegistry()
    names = sorted(labels)
    for suffix, value in {**values, "finished_timestamp_seconds": time.time()}.items():
        if value is None:
            continue
        gauge = Gauge(f"predstore_{job}_{suffix}", f"predstore {job}: {suffix.replace('_', ' ')}", names,
                      registry=registry)
        gauge.labels(**labels).set(value)
    model = re.sub(r"[^A-Za-z0-9_.-]", "_", labels.get("model", "all"))
    try:
        if settings.metrics_dir:
            settings.metrics_dir.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(settings.metrics_dir / f"predstore_{job}_{model}.prom"), registry)
        if settings.pushgateway_url:
            push_to_gateway(settings.pushgateway_url, job=f"predstore_{job}", registry=registry,
                            grouping_key={"model": labels.get("model", "all")}, timeout=5)
    except OSError as exc:  # urllib's errors are OSErrors too: the job's own outcome stands
        log.error("could not export the %s metrics (%s)", job, exc)


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux from VmHWM, which starts afresh at exec:
    ru_maxrss keeps the high-water mark of the process that forked it (a big parent made every
    `predstore score` it started look as big)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
