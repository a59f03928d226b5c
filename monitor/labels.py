"""Ingesting labels: a file of (entity, label[, event time]) rows upserted into ``labels``.

Ingesting is idempotent (the same file twice changes nothing; a changed value is a correction),
partial (labels for some entities only), and late (any time after scoring, or before it). Labels
for entities that no retained run scored are stored, counted and reported: they are matched if
such a run is published later. Rows that cannot be labels (a missing id, label or time, a time
that is not ISO 8601) are left out, and a regressor's label that is no number is kept as text
but never compared with a prediction: both are counted by what was wrong, with the first of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from models.performance import canonical_all
from monitor.errors import store_errors
from store import erasure, faults, monitoring, reader, registry, storage
from store.db import connect
from store.errors import InputError
from store.migrate import prepare
from store.settings import Settings

#: Why a label row is left out, in the order rows are checked (a row counts under the first).
SKIPPED = ("missing id", "missing label", "missing time", "unreadable time")
#: A regressor's label that is no number: stored (as text, for a later version that classifies),
#: counted and reported, but never compared with a prediction.
NOT_A_NUMBER = "not a number"
#: Characters of a left-out value shown as its example.
MAX_SHOWN = 60


def ingest_labels(settings: Settings, path: Path | str, *, model_name: str, entity_col: str, label_col: str,
                  time_col: str | None = None, event_time: datetime | None = None) -> dict[str, Any]:
    """Upsert the labels in ``path`` (a local path, or an object-store URI as text) for
    ``model_name``; returns what happened, counted.

    Without ``time_col`` every label happens at ``event_time``, by default the file's
    modification time; then a label equal to its entity's latest stored label is that label
    again (so that ingesting the same file twice, or a copy of it, is still a no-op).
    """
    partition = reader.open_partition(path, folders_as_one=True)  # labels of several days are one file's worth
    available = reader.columns_of(partition)
    wanted = [c for c in (entity_col, label_col, time_col) if c]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"{path}: no column(s) {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(map(repr, available[:20]))})")
    default_time = event_time or _modified(partition)
    found = LabelRejects()
    line = forgotten = 0
    url = prepare(settings)
    with store_errors(f"ingesting labels from {storage.basename(path)}", conninfo=url), \
            connect(url, application_name="predstore-labels") as conn, conn.transaction():
        model = registry.get_model(conn, model_name)  # NotFound unless registered
        key, erased = erasure.erased(conn, model_name)
        with monitoring.label_stage(conn) as copy:
            for batch in reader.batches(partition, wanted):
                rows, bad = label_rows(batch, entity_col=entity_col, label_col=label_col, time_col=time_col,
                                       default_time=default_time, first_line=line + 1,
                                       numeric=model.task == "regression")
                found.add(bad)
                line += batch.num_rows
                if erased:  # entities `predstore forget` erased: their labels stay out too
                    kept = [r for r in rows if erasure.entity_hmac(key, r[0]) not in erased]
                    forgotten += len(rows) - len(kept)
                    rows = kept
                for row in rows:
                    copy.write_row(row)
                faults.point("labels")
        counts = monitoring.merge_labels(conn, model_name, repeat_is_same=not time_col and event_time is None)
    return {"model": model_name, "path": str(path), **counts, "skipped": found.total(SKIPPED),
            "skipped_by": found.to_dict(SKIPPED), "not_a_number": found.to_dict([NOT_A_NUMBER]).get(NOT_A_NUMBER),
            "erased": forgotten}


def _modified(partition: reader.Partition) -> datetime:
    """When the partition's first file was last modified (an object's Last-Modified on a store)."""
    if partition.filesystem is None:
        return datetime.fromtimestamp(partition.files[0].stat().st_mtime, tz=UTC)
    info = storage.info(partition.filesystem, partition.files[0].as_posix(), shown=partition.uri)
    return info.mtime.astimezone(UTC) if info.mtime else datetime.now(UTC)


@dataclass
class LabelRejects:
    """Label rows counted by what was wrong with them, with the first of each (its value and row
    number in the file): what an ingest reports."""

    rows: dict[str, int] = field(default_factory=dict)
    first: dict[str, tuple[str | None, int]] = field(default_factory=dict)

    def total(self, reasons: Sequence[str]) -> int:
        return sum(self.rows.get(reason, 0) for reason in reasons)

    def note(self, reason: str, count: int, value: Any, row: int) -> None:
        if reason not in self.first:
            shown = None if reason.startswith("missing") else str(value)[:MAX_SHOWN]  # a missing one has none
            self.first[reason] = (shown, row)
        self.rows[reason] = self.rows.get(reason, 0) + count

    def add(self, other: LabelRejects) -> None:
        for reason, count in other.rows.items():
            self.note(reason, count, *other.first[reason])

    def to_dict(self, reasons: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{reason: {"rows": count, "example": the first value (None for a missing one), "row": its row
        number}} for each of ``reasons`` found, in their order."""
        return {reason: {"rows": self.rows[reason], "example": self.first[reason][0], "row": self.first[reason][1]}
                for reason in reasons if reason in self.rows}


def describe(found: dict[str, dict[str, Any]]) -> str:
    """What `LabelRejects.to_dict` says, in a few words: "unreadable time: 2, e.g. 'yesterday' (row 3);
    missing time: 1 (row 7)"."""
    return "; ".join(f"{reason}: {s['rows']:,}" + ("" if s["example"] is None else f", e.g. {s['example']!r}")
                     + f" (row {s['row']})" for reason, s in found.items())


def label_rows(batch: pa.RecordBatch, *, entity_col: str, label_col: str, time_col: str | None,
               default_time: datetime, first_line: int,
               numeric: bool = False) -> tuple[list[tuple[Any, ...]], LabelRejects]:
    """The (entity_id, event_time, label, label_value, line) rows of a batch, and a tally of what
    was wrong: rows left out (`SKIPPED`: a missing entity, label or time, a time there but not
    ISO 8601) and, with ``numeric`` (a regressor's labels), rows kept whose label is `NOT_A_NUMBER`.

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
    found = LabelRejects()
    bad = np.zeros(len(frame), dtype=bool)

    def skip(reason: str, mask: pd.Series, shown: pd.Series, *, keep: bool = False) -> None:
        new = mask.fillna(True).to_numpy(dtype=bool) & ~bad
        if new.any():
            at = int(np.argmax(new))
            found.note(reason, int(new.sum()), shown.iloc[at], first_line + at)
            bad[new] = not keep

    skip("missing id", ~(ids.notna() & (ids != "")), ids)
    skip("missing label", text.isna(), raw)
    if time_col:
        raw_times = frame[time_col]
        # Text times must be ISO 8601; anything else is a skipped row, not a guess.
        times = pd.to_datetime(raw_times, utc=True, errors="coerce",
                               format=None if pd.api.types.is_datetime64_any_dtype(raw_times) else "ISO8601")
        blank = raw_times.isna() | (raw_times.astype("string").str.strip() == "")
        skip("missing time", blank, raw_times)
        skip("unreadable time", times.isna(), raw_times)
    else:
        times = pd.Series(pd.Timestamp(default_time), index=frame.index)
    if numeric:
        skip(NOT_A_NUMBER, values.isna(), raw, keep=True)
    ok = ~bad
    lines = np.arange(first_line, first_line + len(frame))[ok].tolist()
    rows = [(entity, when.to_pydatetime(), label, None if value != value else value, number)
            for entity, when, label, value, number in zip(ids[ok].tolist(), times[ok].tolist(), text[ok].tolist(),
                                                         values[ok].astype(float).tolist(), lines, strict=True)]
    return rows, found


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
