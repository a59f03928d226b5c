"""Prometheus figures of finished jobs, for a node_exporter textfile collector or a Pushgateway.

A batch job is gone before Prometheus could scrape it, so its latest figures are left where
Prometheus can find them: a ``.prom`` file per job and group in ``PREDSTORE_METRICS_DIR``, and/or
a push to ``PREDSTORE_PUSHGATEWAY_URL`` with the group as its grouping key. A group is what one
set of figures belongs to (a model and a role): each export replaces its group's figures, and
leaves the other groups' alone, so a challenger's run never overwrites the current version's.
Every label value comes from a bounded set (model names, roles, `STATUSES`), never a partition.

The time of the last success is kept apart (its own file, its own Pushgateway group), written
only when the job succeeds, so that a failure leaves it standing: alert on
``time() - predstore_score_last_success_timestamp_seconds``.

A failure to export is logged, never fatal to the job.
"""

from __future__ import annotations

import logging
import re
import resource
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from store.settings import Settings

log = logging.getLogger("predstore.store.prometheus")

#: The values of the ``status`` label; any other status is exported as "failed".
STATUSES = ("published", "skipped", "failed")


def export(settings: Settings, job: str, group: Mapping[str, str], values: Mapping[str, float | None], *,
           succeeded: bool, status: str | None = None) -> None:
    """Publish ``values`` (metric suffix -> value) as gauges ``predstore_{job}_{suffix}`` labelled with
    ``group`` (and ``status``, one of `STATUSES`), with ``success`` (1 or 0) and the time of this export;
    when ``succeeded``, also ``last_success_timestamp_seconds``."""
    if not settings.metrics_dir and not settings.pushgateway_url:
        return
    now = time.time()
    labels = {**group, **({"status": status if status in STATUSES else "failed"} if status is not None else {})}
    figures = make_registry(job, labels, {**values, "success": float(succeeded), "finished_timestamp_seconds": now})
    publish(settings, job, group, figures)
    if succeeded:
        publish(settings, f"{job}_last_success", group,
                make_registry(job, dict(group), {"last_success_timestamp_seconds": now}))


def make_registry(job: str, labels: Mapping[str, str], values: Mapping[str, float | None]) -> CollectorRegistry:
    """A registry of gauges ``predstore_{job}_{suffix}``, one per value that is not None, with ``labels``."""
    registry = CollectorRegistry()
    names = sorted(labels)
    for suffix, value in values.items():
        if value is None:
            continue
        gauge = Gauge(f"predstore_{job}_{suffix}", f"predstore {job}: {suffix.replace('_', ' ')}", names,
                      registry=registry)
        (gauge.labels(**labels) if names else gauge).set(value)
    return registry


def publish(settings: Settings, job: str, group: Mapping[str, str], registry: CollectorRegistry) -> None:
    """Replace ``group``'s figures of ``job`` with ``registry``'s: the file
    ``predstore_{job}[_{group value}...].prom`` and the Pushgateway group (job ``predstore_{job}``)."""
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", group[key]) for key in sorted(group)]
    try:
        if settings.metrics_dir:
            settings.metrics_dir.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(settings.metrics_dir / "_".join([f"predstore_{job}", *names])) + ".prom",
                              registry)
        if settings.pushgateway_url:
            push_to_gateway(settings.pushgateway_url, job=f"predstore_{job}", registry=registry,
                            grouping_key=dict(group), timeout=5)
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
