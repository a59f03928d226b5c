"""The values a scoring run passes around: what it is asked (`ScoreRequest`), what it decided
before reading a row (`RunPlan`), and what it did (`RunResult`). Nothing here reads or writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batch.executors import ExecutorSpec
from batch.gate import GatePolicy
from store import reader, registry
from store.db import without_password

DEFAULT_ENTITY_COL = "entity_id"

#: Called as rows are done with (rows done so far, total rows or None).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ScoreRequest:
    """What to score, with which model, how strictly, and where (a local path, or an object-store URI)."""

    path: Path | str
    model_name: str
    version: int | None = None
    entity_col: str | None = None
    partition_key: str | None = None
    max_reject_fraction: float = 0.05
    force: bool = False
    #: The run is the model's whole served set (for its version): entities it lacks stop being served.
    snapshot: bool = False
    #: Pass the publish gate before serving (None: the model's policy, `predstore models configure`).
    gate: bool | None = None
    #: The gate's row-count limit (None: the model's policy, else `GatePolicy`'s default).
    max_row_change: float | None = None
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)


@dataclass(frozen=True)
class RunPlan:
    """One pass over a partition: the store's URL, the partition and its entity column, the
    request, and each due role's model version (the current model first, then its challenger) and,
    once they are started, its run. The roles' runs publish together or not at all."""

    url: str
    partition: reader.Partition
    entity_col: str
    request: ScoreRequest
    models: Mapping[str, registry.ModelVersion]
    run_ids: Mapping[str, int] = field(default_factory=dict)
    #: The publish gate the runs must pass, None when they are served without one.
    gate: GatePolicy | None = None

    @property
    def roles(self) -> list[str]:
        return list(self.models)

    @property
    def task_url(self) -> str:
        """The database URL the run's tasks get (see `task_url`)."""
        return task_url(self.url, self.request.executor)


@dataclass
class RunResult:
    """The outcome of one scoring run, as the ledger records it."""

    status: str
    model: str
    model_version: int
    partition: str
    run_id: int | None = None
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_bytes: int = 0
    superseded_run: int | None = None
    message: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    #: The run of the model's challenger, scored in the same pass, if it has one.
    challenger: RunResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counts(self) -> dict[str, Any]:
        """The counts and timings the ledger records of the run."""
        return {"rows_in": self.rows_in, "rows_scored": self.rows_scored, "rows_rejected": self.rows_rejected,
                "rows_duplicate": self.rows_duplicate, "duration_s": self.duration_s,
                "rows_per_s": self.rows_per_s, "peak_rss_bytes": self.peak_rss_bytes}


def task_url(url: str, executor: ExecutorSpec) -> str:
    """The database URL the run's tasks get: without its password when they run on a Dask
    cluster elsewhere, whose workers take it from their own environment (``PGPASSWORD``, or a
    ``~/.pgpass``), so that it never travels in a task."""
    if executor.kind == "dask" and executor.dask_address != "local":
        return without_password(url)
    return url
