"""One task of a scoring run: score a slice of the partition into the run's table.

A task reads its slice, validates it, predicts and COPYs the predictions (and its rejected rows)
on connections of its own, in three overlapping stages, and commits. It returns counts, its
share of the run's profile and one digest per row group. The same function runs in-process, in
a local worker process or on a Dask worker; the run's coordinator publishes once, when all are done.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from batch.overlap import background, fan_out
from models import profile
from models.artifacts import load_model
from models.predict import Scores, predict
from models.validate import ERASED, Erasures, Validated, validate
from store import erasure, faults, predictions, reader
from store.db import connect
from store.errors import ModelError
from store.features import FeatureColumn, FeatureSchema

#: Called with the number of input rows a task has finished with since the last call.
RowsDone = Callable[[int], None]


@dataclass(frozen=True)
class Target:
    """One model a task scores with, and the run its predictions go to."""

    run_id: int
    artifact_uri: str
    sha256: str
    format: str
    schema: FeatureSchema
    out_columns: list[str]
    baseline: list[dict[str, Any]]
    #: Rejected rows its run may have; past it a task stops reading (the runs fail anyway).
    reject_limit: float | None
    #: The types its skops artifact may load with (`ModelVersion.trusted_types`).
    trusted_types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskContext:
    """What every task of a run needs to know (small and picklable, for worker processes).

    Several targets (the current model and its challenger) share one read of each slice, and
    one validation where their feature schemas agree.
    """

    url: str
    entity_col: str
    columns: list[str]
    targets: tuple[Target, ...]
    #: The run has this one task: it may empty each run table and COPY into it frozen.
    sole_task: bool = False


@dataclass
class TargetResult:
    """What one task wrote for one target."""

    rows_scored: int = 0
    rows_rejected: int = 0
    #: Of ``rows_rejected``, the rows of erased entities (`predstore forget`): not the input's fault.
    rows_erased: int = 0
    digests: list[str] = field(default_factory=list)
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TaskResult:
    """What one task did."""

    first_row: int
    rows_in: int = 0
    targets: list[TargetResult] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=lambda: {"read_validate_s": 0.0, "predict_s": 0.0,
                                                              "write_s": 0.0})


@lru_cache(maxsize=4)
def cached_model(uri: str, sha256: str, fmt: str, trusted: tuple[str, ...] | None = None) -> Any:
    """The model, loaded (and its sha256 checked) once per process."""
    return load_model(uri, sha256, fmt, trusted=trusted)


def score_task(part: reader.Slice, ctx: TaskContext, progress: RowsDone | None = None) -> TaskResult:
    """Score ``part`` into each target's run table and commit; see the module docstring.

    Three stages overlap: `_read` (this thread) validates each batch once for all targets, and
    per target `_predicted` and `_write` (a thread each). Each stage counts into its own record,
    `_Read` or the target's `_Scored`, and the task's result is put together from them at the end.
    """
    models = [cached_model(t.artifact_uri, t.sha256, t.format, t.trusted_types) for t in ctx.targets]
    read = _Read(rejected=[0] * len(ctx.targets), erased=[0] * len(ctx.targets),
                 profiles=[{} for _ in ctx.targets])
    scored = [_Scored() for _ in ctx.targets]
    with ExitStack() as stack:
        writers = [stack.enter_context(connect(ctx.url, application_name="predstore-score")) for _ in ctx.targets]
        quarantines = [stack.enter_context(connect(ctx.url, application_name="predstore-quarantine"))
                       for _ in ctx.targets]
        # The targets are versions of one model, so they share its erasure list.
        erasures = Erasures(*erasure.erased_for_run(writers[0], ctx.targets[0].run_id))
        fan_out(_read(part, ctx, read, quarantines, erasures),
                [partial(_write, index=i, target=target, model=model, writer=writer, sole_task=ctx.sole_task,
                         scored=mine, progress=progress if i == 0 else None)
                 for i, (target, model, writer, mine) in enumerate(zip(ctx.targets, models, writers, scored,
                                                                      strict=True))])
        for connection in (*quarantines, *writers):
            connection.commit()
            faults.point("task_commit")
    return TaskResult(
        first_row=part.first_row, rows_in=read.rows_in,
        targets=[TargetResult(rows_scored=mine.rows_scored, rows_rejected=read.rejected[i],
                              rows_erased=read.erased[i],
                              digests=[mine.digests[unit].hexdigest() for unit in sorted(mine.digests)],
                              profile=profile.add(read.profiles[i], mine.profile))
                 for i, mine in enumerate(scored)],
        stages={"read_validate_s": read.seconds, "predict_s": sum(s.predict_s for s in scored),
                "write_s": sum(s.write_s for s in scored)},
    )


@dataclass
class _Read:
    """What the read stage did, counted by its thread alone: rows read, and per target rows
    rejected (and of those, erased) and the profile of its features and rejects."""

    rejected: list[int]
    erased: list[int]
    profiles: list[dict[str, dict[str, Any]]]
    rows_in: int = 0
    seconds: float = 0.0


@dataclass
class _Scored:
    """What one target's predict and write stages did; each field is written by one thread."""

    rows_scored: int = 0
    #: The profile of its outputs.
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One digest per row group.
    digests: dict[int, Digest] = field(default_factory=dict)
    predict_s: float = 0.0
    write_s: float = 0.0


def _read(part: reader.Slice, ctx: TaskContext, read: _Read, quarantines: list[psycopg.Connection],
          erasures: Erasures) -> Iterator[tuple[int, list[Validated]]]:
    """The slice's batches, each validated for every target, with their row group's number; rejects
    are COPYed to quarantine as they are found. Stops early once a run rejected more than its limit
    (the runs fail anyway; the rejects are kept for diagnosis)."""
    known = [t.schema.known_categories
             for t in ctx.targets]
    with ExitStack() as copies:
        rejects = [copies.enter_context(predictions.copy_rejects(q)) for q in quarantines]
        for unit, batches in enumerate(reader.units(part, ctx.columns)):
            for batch in batches:
                t = time.perf_counter()
                checks = _validate_all(batch, ctx, first_row=part.first_row + read.rows_in, erasures=erasures)
                read.rows_in += batch.num_rows
                for i, (target, checked) in enumerate(zip(ctx.targets, checks, strict=True)):
                    for row in checked.rejects:
                        rejects[i].write_row((target.run_id, *row))
                    read.rejected[i] += len(checked.rejects)
                    read.erased[i] += sum(1 for row in checked.rejects if row[2] == ERASED)
                    if target.baseline:
                        counted = profile.add(
                            profile.profile_features(checked.features, target.baseline, known[i]),
                            profile.profile_rejects(checked.rejects, target.baseline, known[i]))
                        read.profiles[i] = profile.add(read.profiles[i], counted)
                read.seconds += time.perf_counter() - t
                if any(target.reject_limit is not None and rejected - erased > target.reject_limit
                       for target, rejected, erased in zip(ctx.targets, read.rejected, read.erased,
                                                           strict=True)):
                    return
                yield unit, checks


def _predicted(items: Iterator[tuple[int, list[Validated]]], *, index: int, target: Target, model: Any,
               scored: _Scored) -> Iterator[tuple[int, Validated, Scores | None]]:
    """Target ``index``'s predictions of each validated batch."""
    for unit, checks in items:
        t = time.perf_counter()
        out = _predict(model, checks[index], target.schema)
        scored.predict_s += time.perf_counter() - t
        yield unit, checks[index], out


def _write(items: Iterator[tuple[int, list[Validated]]], *, index: int, target: Target, model: Any,
           writer: psycopg.Connection, sole_task: bool, scored: _Scored, progress: RowsDone | None) -> None:
    """Predict (in a thread of its own) and COPY target ``index``'s predictions into its run's table."""
    with predictions.copy_predictions(writer, target.run_id, target.out_columns, sole_writer=sole_task) as write:
        predicted = _predicted(items, index=index, target=target, model=model, scored=scored)
        for unit, checked, out in background(predicted, name=f"predict-{index}"):
            t = time.perf_counter()
            digest = scored.digests.setdefault(unit, Digest())
            if out is not None:
                write(record_batch(checked, out, target.out_columns))
                faults.point("copy")
                digest.update(checked.entity_ids, out)
                scored.rows_scored += len(checked.entity_ids)
                if target.baseline:
                    scored.profile = profile.add(scored.profile, profile.profile_outputs(out, target.baseline))
            scored.write_s += time.perf_counter() - t
            if progress:
                progress(len(checked.entity_ids) + len(checked.rejects))


def digest_task(part: reader.Slice, ctx: TaskContext) -> TaskResult:
    """Recompute a slice's predictions by the first target and their digests, writing nothing
    (for `runs verify`), with today's erasure list."""
    target = ctx.targets[0]
    model = cached_model(target.artifact_uri, target.sha256, target.format, target.trusted_types)
    result = TaskResult(first_row=part.first_row, targets=[TargetResult()])
    with connect(ctx.url, autocommit=True, application_name="predstore-verify") as conn:
        erasures = Erasures(*erasure.erased_for_run(conn, target.run_id))
    for batches in reader.units(part, ctx.columns):
        digest = Digest()
        for batch in batches:
            checked = validate(batch, target.schema, entity_col=ctx.entity_col,
                               first_row=part.first_row + result.rows_in, erasures=erasures)
            result.rows_in += batch.num_rows
            out = _predict(model, checked, target.schema)
            if out is not None:
                digest.update(checked.entity_ids, out)
        result.targets[0].digests.append(digest.hexdigest())
    return result


def _validate_all(batch: pa.RecordBatch, ctx: TaskContext, *, first_row: int,
                  erasures: Erasures) -> list[Validated]:
    """The batch validated for each target; once for targets whose feature schemas agree."""
    done: dict[tuple[FeatureColumn, ...], Validated] = {}
    checks = []
    for target in ctx.targets:
        key = target.schema.columns
        if key not in done:
            done[key] = validate(batch, target.schema, entity_col=ctx.entity_col, first_row=first_row,
                                 erasures=erasures)
        checks.append(done[key])
    return checks


def _predict(model: Any, checked: Validated, schema: FeatureSchema) -> Scores | None:
    if not len(checked.features):
        return None
    try:
        return predict(model, checked.features, schema=schema)
    except Exception as exc:  # the model's own error, whatever its type
        raise ModelError(f"the model failed to predict: {type(exc).__name__}: {exc}") from exc


def record_batch(checked: Validated, out: Scores, columns: list[str]) -> pa.RecordBatch:
    """The rows to COPY for one scored batch, as Arrow arrays (no Python object per row)."""
    arrays: dict[str, pa.Array] = {
        "entity_id": checked.entity_ids,
        "row_number": pa.array(checked.row_numbers),
        "prediction": pa.array(out.prediction),
    }
    if "label" in columns:
        assert out.classes is not None and out.best is not None
        arrays["label"] = pa.array(out.classes, pa.string()).take(pa.array(out.best))
    if "scores" in columns:
        assert out.proba is not None
        n, k = out.proba.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        arrays["scores"] = pa.ListArray.from_arrays(offsets, pa.array(out.proba.ravel()))
    return pa.RecordBatch.from_arrays([arrays[c] for c in columns], schema=predictions.arrow_schema(columns))


class Digest:
    """sha256 of predictions (ids, values, labels, class scores), however they were batched."""

    def __init__(self) -> None:
        self._parts = {k: hashlib.sha256() for k in ("id_bytes", "id_lengths", "prediction", "label", "scores")}

    def update(self, ids: pa.Array, out: Scores) -> None:
        offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32, count=len(ids) + 1, offset=ids.offset * 4)
        data = ids.buffers()[2]
        self._parts["id_bytes"].update(memoryview(data)[offsets[0]:offsets[-1]] if data is not None else b"")
        self._parts["id_lengths"].update(np.diff(offsets).astype(np.int64).tobytes())
        self._parts["prediction"].update(np.ascontiguousarray(out.prediction, dtype=np.float64).tobytes())
        if out.best is not None:
            self._parts["label"].update(out.best.astype(np.int64).tobytes())
        if out.proba is not None:
            self._parts["scores"].update(np.ascontiguousarray(out.proba).tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(h.digest() for h in self._parts.values())).hexdigest()


def run_digest(unit_digests: list[str]) -> str:
    """The run's digest: over its row groups' digests, in partition order."""
    return hashlib.sha256("".join(unit_digests).encode()).hexdigest()
