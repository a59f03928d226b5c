"""Point-in-time training sets: every label matched to a served prediction, beside the features
exactly as that prediction's run read them.

The match of a label to the prediction it judges is the monitor's (`store.matching`: the run in force
at the label's event time), so a feature value is never one the model had not seen when it
predicted. The features are read back from the partition the run recorded (its ``input_uri``),
after checking that its content still has the run's fingerprint: a partition that changed or went
away is an error naming it, never a silently different training set. Within a partition, the row
of an entity is the one the run kept: the last one holding its id (`store.predictions` keeps the
later of duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from models.validate import entity_text
from store import reader, registry, training
from store.errors import InputError, NotFound, PredstoreError

#: The columns a training set has besides the features, in order.
COLUMNS = ("entity_id", "label", "label_value", "event_time", "run_id", "model_version", "partition", "matched_as")


def training_set(conn: psycopg.Connection, model_name: str, *, since: datetime | None = None,
                 until: datetime | None = None, version: int | None = None) -> pd.DataFrame:
    """The labeled predictions of ``model_name``'s served runs (labels with event times in
    [``since``, ``until``), of ``version`` if given), one row each: the entity, the features as its
    run read them, the label (``label``, and ``label_value`` when it is a number), its event time,
    the run, the version and the partition, and how the label was matched (``in_force``,
    ``latest_before``, or ``earliest`` for a label older than every run holding its entity)."""
    versions = {v.version: v for v in registry.list_models(conn, model_name)}
    if not versions:
        registry.get_model(conn, model_name)  # NotFound, saying what exists
    matches = pd.DataFrame(training.labeled_predictions(conn, model_name, since=since, until=until, version=version),
                           columns=list(training.COLUMNS))
    parts = []
    for run_id, group in matches.groupby("run_id", sort=True):
        first = group.iloc[0]
        schema = versions[int(first["model_version"])].feature_schema
        features = schema.names
        entity_col = first["entity_col"] or schema.entity_col or "entity_id"
        rows = _rows_of(int(run_id), str(first["partition"]), str(first["input_uri"]), first["input_fingerprint"],
                        str(entity_col), features)
        parts.append(group[list(COLUMNS)].merge(rows, on="entity_id", how="inner", validate="many_to_one"))
    columns = [*COLUMNS[:1], *_feature_order(versions, version), *COLUMNS[1:]]
    if not parts:
        return pd.DataFrame(columns=columns)
    found = pd.concat(parts, ignore_index=True)
    return found[[c for c in columns if c in found] + [c for c in found if c not in columns]]


def _rows_of(run_id: int, partition: str, uri: str, fingerprint: str | None, entity_col: str,
             features: Sequence[str]) -> pd.DataFrame:
    """The features of each entity of a run's partition, as the run kept them (the last row of an id)."""
    try:
        opened = reader.open_partition(uri, key=partition, folders_as_one=True)
        if fingerprint is not None and opened.fingerprint != fingerprint:
            raise InputError(f"partition {partition!r} ({uri}) has changed since run {run_id} scored it (its "
                             "content has another fingerprint): restore what the run read, or build the training "
                             "set of later runs (--since)")
        table = pa.Table.from_batches(list(reader.batches(opened, [entity_col, *features])))
    except InputError:
        raise
    except PredstoreError as exc:
        raise NotFound(f"partition {partition!r} of run {run_id} cannot be read back from {uri}: {exc}; the "
                       "training set needs the partitions its labeled runs read") from exc
    ids, _ = entity_text(table.column(entity_col), entity_col)
    frame = table.drop_columns([entity_col]).to_pandas()
    frame.insert(0, "entity_id", ids.to_pandas())
    frame = frame[pc.invert(pc.is_null(ids)).to_numpy(zero_copy_only=False)]
    return frame.drop_duplicates("entity_id", keep="last")


def _feature_order(versions: dict[int, Any], version: int | None) -> list[str]:
    """The features of ``version`` (else of the newest version) in the schema's order."""
    chosen = versions[version] if version in versions else versions[max(versions)]
    return chosen.feature_schema.names
