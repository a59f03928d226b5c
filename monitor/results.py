"""What a monitor run returns: each drift check it recorded, its performance rows and its alerts
(`MonitorResult`), as frozen values; `Found` gathers them while the run goes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from monitor.alerts import Alert
from store.performance import PerformanceRow


@dataclass(frozen=True)
class RecordedCheck:
    """One drift check as recorded: of a run, of the runs published in a window, or of a day of
    live traffic (``run_role`` 'live'), against its version's baseline."""

    check_id: int
    #: 'run' or 'window'.
    scope: str
    #: What its alerts are raised for (run:ID, window:START..END:vN, live:DAY:vN).
    scope_key: str
    model_version: int
    run_role: str
    run_id: int | None
    partition_key: str | None
    run_ids: tuple[int, ...]
    window_start: datetime | None
    rows: int
    features: int
    drifted: tuple[str, ...]
    drift_share: float | None
    dataset_drift: bool
    outputs_drifted: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    #: Every metric of every column (`monitor.stats.Result.to_dict`).
    results: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class MonitorResult:
    """What one monitor run computed and raised. ``alerts`` are the ones raised now (sent to the
    webhook and the scheduler's on_alert); ``standing`` were raised before for what was examined."""

    model: str
    checks: tuple[RecordedCheck, ...] = ()
    performance: tuple[PerformanceRow, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)
    alerts: tuple[Alert, ...] = ()
    standing: tuple[Alert, ...] = ()
    #: What the lookup API answered in the last 24 hours: lookups, misses, stale, miss_rate.
    lookups: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        return bool(self.alerts)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "fired": self.fired, "checks": [asdict(c) for c in self.checks],
                "performance": [asdict(r) for r in self.performance], "labels": dict(self.labels),
                "alerts": [a.to_dict() for a in self.alerts], "standing": [a.to_dict() for a in self.standing],
                "lookups": dict(self.lookups)}


@dataclass
class Found:
    """What a monitor run finds, as it finds it (`MonitorResult` once done)."""

    model: str
    checks: list[RecordedCheck] = field(default_factory=list)
    performance: list[PerformanceRow] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    standing: list[Alert] = field(default_factory=list)
    lookups: dict[str, Any] = field(default_factory=dict)

    def done(self) -> MonitorResult:
        return MonitorResult(self.model, tuple(self.checks), tuple(self.performance), dict(self.labels),
                             tuple(self.alerts), tuple(self.standing), dict(self.lookups))
