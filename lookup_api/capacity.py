"""How many workers the lookup API runs, and whether the database has the connections they need.

Workers: one per CPU the process may use. In a container that is its CPU quota (cgroup v2
``cpu.max``, or v1 ``cpu.cfs_quota_us``), not the host's cores, which ``os.cpu_count()`` reports;
a fraction of a CPU counts as one.

Connections: each worker holds ``PREDSTORE_API_POOL_SIZE`` connections for requests and one for its
listener (publishes and revoked keys), so W workers need ``W x (pool size + 1)``. They must fit
in what the server has free: ``max_connections``, less the slots kept for superusers
(``superuser_reserved_connections``, and ``reserved_connections`` from PostgreSQL 16), less the
client connections already open. A service that would not fit refuses to start, instead of
answering 503 once its last workers meet "too many clients".
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from store.db import connect, connection_slots, database_url, describe_target
from store.errors import ConfigError, StoreUnavailable
from store.settings import Settings

log = logging.getLogger("predstore.lookup_api.capacity")

CGROUP = Path("/sys/fs/cgroup")


def available_cpus(*, cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity, bounded by its cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPUs a cgroup quota allows (1.5 for "150000 100000"), or None where there is no quota."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()  # v2: "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (cgroup / "cpu", cgroup / "cpu,cpuacct"):  # v1: a quota of -1 is none
        try:
            v1_quota = int((folder / "cpu.cfs_quota_us").read_text())
            v1_period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return v1_quota / v1_period if v1_quota > 0 and v1_period > 0 else None
    return None


def connections_needed(settings: Settings, *, workers: int) -> int:
    """The connections ``workers`` workers hold: each its pool and its listener."""
    return workers * (settings.api_pool_size + 1)


def check_connections(settings: Settings, *, workers: int) -> None:
    """Raise `ConfigError` when ``workers`` workers need more connections than the database has free.

    A database that cannot be reached is not checked: the service starts and answers 503 until it is back.
    """
    url = settings.api_reader_url or database_url(settings)
    needed = connections_needed(settings, workers=workers)
    try:
        with connect(url, autocommit=True, application_name="predstore-lookup-check") as conn:
            slots = connection_slots(conn)
    except StoreUnavailable as exc:
        log.warning("could not check that the database has %d free connections: %s", needed, exc)
        return
    if needed > slots.free:
        raise ConfigError(
            f"the lookup API needs {needed} database connections ({workers} workers x "
            f"({settings.api_pool_size} pooled + 1 listener)) but {describe_target(url)} has {slots.free} free "
            f"(max_connections {slots.max_connections} - {slots.reserved} reserved - {slots.in_use} in use); "
            "lower --workers or PREDSTORE_API_POOL_SIZE, or raise max_connections")
