"""One task of a scoring run: score a slice of the partition into the run's table.

A task reads its slice, validates it, predicts and COPYs the predictions (and its rejected rows)
on connections of its own, in three overlapping stages, and commits. It returns counts, its
share of the run's profile and one digest per row group. The same function runs in-process, in
a local worker process or on a Dask worker; the run's coordinator publishes once, when all are done.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from batch import profile, reader
from batch.artifacts import load_model
from batch.pipeline import background
from batch.score import Scores, predict
from batch.validate import Validated, validate
from store import predictions
from store.db import connect
from store.errors import ModelError

#: Called with the number of input rows a task has finished with since the last call.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class TaskContext:
    """What every task of a run needs to know (small and picklable, for worker processes)."""

    url: str
    run_id: int
    artifact_uri: str
    sha256: str
    format: str
    schema: dict[str, Any]
    entity_col: str
    columns: list[str]
    out_columns: list[str]
    baseline: list[dict[str, Any]]
    #: Rejected rows the whole run may have; a task past it stops reading (the run fails anyway).
    reject_limit: float | None


@dataclass
class TaskResult:
    """What one task did."""

    first_row: int
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    digests: list[str] = field(default_factory=list)
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=lambda: {"read_validate_s": 0.0, "predict_s": 0.0,
                                                              "write_s": 0.0})


@lru_cache(maxsize=4)
def cached_model(uri: str, sha256: str, fmt: str) -> Any:
    """The model, loaded (and its sha256 checked) once per process."""
    return load_model(uri, sha256, fmt)


def score_task(part: reader.Slice, ctx: TaskContext, progress: Progress | None = None) -> TaskResult:
    """Score ``part`` into the run's table and commit; see the module docstring."""
    model = cached_model(ctx.artifact_uri, ctx.sha256, ctx.format)
    result = TaskResult(first_row=part.first_row)
    known = {c["name"]: c.get("categories") for c in ctx.schema["columns"] if c["kind"] == "categorical"}
    lock = threading.Lock()  # the reader thread and the writer each add to the profile
    with connect(ctx.url, application_name="predstore-score") as writer, \
            connect(ctx.url, application_name="predstore-quarantine") as quarantine:

        def validated() -> Iterator[tuple[int, Validated]]:
            with predictions.copy_rejects(quarantine) as rejects:
                for unit, batches in enumerate(reader.units(part, ctx.columns)):
                    for batch in batches:
                        t = time.perf_counter()
                        checked = validate(batch, ctx.schema, entity_col=ctx.entity_col,
                                           first_row=part.first_row + result.rows_in)
                        for row in checked.rejects:
                            rejects.write_row((ctx.run_id, *row))
                        result.rows_in += batch.num_rows
                        result.rows_rejected += len(checked.rejects)
                        if ctx.baseline:
                            counted = profile.profile_features(checked.features, ctx.baseline, known)
                            with lock:
                                result.profile = profile.add(result.profile, counted)
                        result.stages["read_validate_s"] += time.perf_counter() - t
                        if ctx.reject_limit is not None and result.rows_rejected > ctx.reject_limit:
                            return  # the run fails anyway: stop reading, keep these rejects for diagnosis
                        yield unit, checked

        def scored() -> Iterator[tuple[int, Validated, Scores | None]]:
            for unit, checked in background(validated(), name="read"):
                t = time.perf_counter()
                out = _predict(model, checked, ctx.schema)
                result.stages["predict_s"] += time.perf_counter() - t
                yield unit, checked, out

        digests: dict[int, Digest] = {}
        with predictions.copy_predictions(writer, ctx.run_id, ctx.out_columns) as write:
            for unit, checked, out in background(scored(), name="predict"):
                t = time.perf_counter()
                digest = digests.setdefault(unit, Digest())
                if out is not None:
                    write(record_batch(checked, out, ctx.out_columns))
                    digest.update(checked.entity_ids, out)
                    result.rows_scored += len(checked.entity_ids)
                    if ctx.baseline:
                        counted = profile.profile_outputs(out, ctx.baseline)
                        with lock:
                            result.profile = profile.add(result.profile, counted)
                result.stages["write_s"] += time.perf_counter() - t
                if progress:
                    progress(len(checked.entity_ids) + len(checked.rejects))
        quarantine.commit()
        writer.commit()
    result.digests = [digests[u].hexdigest() for u in sorted(digests)]
    return result


def digest_task(part: reader.Slice, ctx: TaskContext) -> TaskResult:
    """Recompute a slice's predictions and their digests, writing nothing (for `runs verify`)."""
    model = cached_model(ctx.artifact_uri, ctx.sha256, ctx.format)
    result = TaskResult(first_row=part.first_row)
    for batches in reader.units(part, ctx.columns):
        digest = Digest()
        for batch in batches:
            checked = validate(batch, ctx.schema, entity_col=ctx.entity_col, first_row=part.first_row + result.rows_in)
            result.rows_in += batch.num_rows
            out = _predict(model, checked, ctx.schema)
            if out is not None:
                digest.update(checked.entity_ids, out)
        result.digests.append(digest.hexdigest())
    return result


def _predict(model: Any, checked: Validated, schema: dict[str, Any]) -> Scores | None:
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
