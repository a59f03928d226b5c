"""Profiling any data file against a model's baseline, as a scoring run would, without recording."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from models import profile as model_profile
from models.validate import check_columns, required_columns, validate
from monitor import stats
from monitor.config import MonitorConfig
from store import profiles, reader, registry
from store.db import connect
from store.errors import ConfigError
from store.migrate import prepare
from store.settings import Settings

DEFAULT_ENTITY_COL = "entity_id"


@dataclass(frozen=True)
class FileProfile:
    """The drift of a data file against a model version's baseline (nothing is recorded)."""

    model: str
    model_version: int
    path: str
    rows_in: int
    rows_rejected: int
    check: stats.DriftCheck
    dataset_drift: bool

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.model_version, "path": self.path,
                "rows_in": self.rows_in, "rows_rejected": self.rows_rejected, "rows": self.check.rows,
                "features": self.check.features, "drifted": self.check.drifted,
                "drift_share": self.check.drift_share, "dataset_drift": self.dataset_drift,
                "results": [r.to_dict() for r in self.check.results]}


def profile_file(settings: Settings, path: Path, model_name: str, *, version: int | None = None,
                 config: MonitorConfig | None = None) -> FileProfile:
    """Count a Parquet file (or directory, or CSV) into a model's baseline bins, as a scoring run
    would (rows the model would reject are left out), and compare. Records nothing."""
    config = config or MonitorConfig.from_env()
    with connect(prepare(settings), autocommit=True) as conn:
        model = registry.get_model(conn, model_name, version=version)
        base = profiles.get_baseline(conn, model.name, model.version)
    if not base:
        raise ConfigError(f"model {model.name!r} version {model.version} has no baseline; register it with "
                          "--train-data to monitor it")
    schema = model.feature_schema
    entity_col = schema.entity_col or DEFAULT_ENTITY_COL
    partition = reader.open_partition(path)
    available = reader.columns_of(partition)
    check_columns(schema, entity_col, available if entity_col in available else [*available, entity_col])
    columns = [c for c in required_columns(schema, entity_col) if c in available]
    known = schema.known_categories
    total: dict[str, dict[str, Any]] = {}
    rows_in = rejected = 0
    for batch in reader.batches(partition, columns):
        if entity_col not in available:  # profiling needs no ids: give every row one
            batch = batch.append_column(entity_col, pa.repeat("-", batch.num_rows))
        checked = validate(batch, schema, entity_col=entity_col, first_row=rows_in + 1)
        rows_in += batch.num_rows
        rejected += len(checked.rejects)
        total = model_profile.add(total, model_profile.profile_features(checked.features, base, known))
    drift = stats.check(base, total, config.drift)
    return FileProfile(model=model.name, model_version=model.version, path=str(path), rows_in=rows_in,
                       rows_rejected=rejected, check=drift, dataset_drift=drift.dataset_drift(config.drift))
