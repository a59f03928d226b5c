"""Ingesting labels: a file of (entity, label[, event time]) rows upserted into ``labels``.

Ingesting is idempotent (the same file twice changes nothing; a changed value is a correction),
partial (labels for some entities only), and late (any time after scoring, or before it). Labels
for entities that no retained run scored are stored, counted and reported: they are matched if
such a run is published later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch import faults, reader, storage
from batch.performance import canonical_all
from monitor.errors import store_errors
from store import erasure, monitoring, registry
from store.db import connect
from store.errors import InputError
from store.migrate import prepare
from store.settings import Settings


def ingest_labels(settings: Settings, path: Path | str, *, model_name: str, entity_col: str, label_col: str,
                  time_col: str | None = None, event_time: datetime | None = None) -> dict[str, Any]:
    """Upsert the labels in ``path`` (a local path, or an object-store URI as text) for
    ``model_name``; returns what happened, counted.

    Without ``time_col`` every label happens at ``event_time``, by default the file's
    modification time; then a label equal to its entity's latest stored label is that label
    again (so that ingesting the same file twice, or a copy of it, is still a no-op).
    """
    partition = reader.open_partition(path)
    available = reader.columns_of(partition)
    wanted = [c for c in (entity_col, label_col, time_col) if c]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"{path}: no column(s) {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(map(repr, available[:20]))})")
    default_time = event_time or _modified(partition)
    skipped = line = forgotten = 0
    url = prepare(settings)
    with store_errors(f"ingesting labels from {storage.basename(path)}", conninfo=url), \
            connect(url, application_name="predstore-labels") as conn, conn.transaction():
        registry.get_model(conn, model_name)  # NotFound unless registered
        key, erased = erasure.erased(conn, model_name)
        with monitoring.label_stage(conn) as copy:
            for batch in reader.batches(partition, wanted):
                rows, bad = label_rows(batch, entity_col=entity_col, label_col=label_col, time_col=time_col,
                                       default_time=default_time, first_line=line + 1)
                skipped += bad
                line += batch.num_rows
                if erased:  # entities `predstore forget` erased: their labels stay out too
                    kept = [r for r in rows if erasure.entity_hmac(key, r[0]) not in erased]
                    forgotten += len(rows) - len(kept)
                    rows = kept
                for row in rows:
                    copy.write_row(row)
                faults.point("labels")
        counts = monitoring.merge_labels(conn, model_name, repeat_is_same=not time_col and event_time is None)
    return {"model": model_name, "path": str(path), **counts, "skipped": skipped, "erased": forgotten}


def _modified(partition: reader.Partition) -> datetime:
    """When the partition's first file was last modified (an object's Last-Modified on a store)."""
    if partition.filesystem is None:
        return datetime.fromtimestamp(partition.files[0].stat().st_mtime, tz=UTC)
    info = storage.info(partition.filesystem, partition.files[0].as_posix(), shown=partition.uri)
    return info.mtime.astimezone(UTC) if info.mtime else datetime.now(UTC)


def label_rows(batch: pa.RecordBatch, *, entity_col: str, label_col: str, time_col: str | None,
               default_time: datetime, first_line: int) -> tuple[list[tuple[Any, ...]], int]:
    """The (entity_id, event_time, label, label_value, line) rows of a batch, and how many rows
    were skipped for a missing entity, label or time.

    A label is stored as its `canonical` text (so that it compares with a classifier's classes)
    and, when it is a number, as ``label_value`` too (regression).
    """
    frame = _text_columns(batch).to_pandas()
    ids = frame[entity_col].astype("string").str.strip()
    raw = frame[label_col]
    if pd.api.types.is_bool_dtype(raw):
        values = pd.Series(np.nan, index=raw.index)
    else:
        values = pd.to_numeric(raw, errors="coerce")
    text = pd.Series(canonical_all(raw.tolist()), index=raw.index, dtype=object)
    if time_col:
        raw_times = frame[time_col]
        # Text times must be ISO 8601; anything else is a skipped row, not a guess.
        times = pd.to_datetime(raw_times, utc=True, errors="coerce",
                               format=None if pd.api.types.is_datetime64_any_dtype(raw_times) else "ISO8601")
    else:
        times = pd.Series(pd.Timestamp(default_time), index=frame.index)
    ok = (ids.notna() & (ids != "") & text.notna() & times.notna()).to_numpy(dtype=bool)
    lines = np.arange(first_line, first_line + len(frame))[ok].tolist()
    rows = [(entity, when.to_pydatetime(), label, None if value != value else value, number)
            for entity, when, label, value, number in zip(ids[ok].tolist(), times[ok].tolist(), text[ok].tolist(),
                                                         values[ok].astype(float).tolist(), lines, strict=True)]
    return rows, int((~ok).sum())


def _text_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with raw bytes (how CSV columns are read) decoded as UTF-8 text."""
    columns = []
    for column in batch.columns:
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            try:
                column = column.cast(pa.string())
            except pa.ArrowInvalid as exc:
                raise InputError(f"a label file column is not UTF-8 text ({exc})") from exc
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
