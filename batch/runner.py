"""The scoring job: one partition in, one published run out (or a skipped or failed one).

The I/O shell around the pure functions: read batches, validate, score, COPY, publish. Reading
and validating, predicting, and writing run as three overlapping stages. Everything the run
writes to ``predictions`` happens in one transaction that also publishes it, so readers see the
previous run or this one, never part of it; a run that dies leaves only its ledger row, which the
next run for the partition marks abandoned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from batch import profile, reader
from batch.artifacts import load_model
from batch.pipeline import background
from batch.score import Scores, predict
from batch.validate import Validated, check_columns, required_columns, validate
from store import ledger, predictions, profiles, registry
from store.db import connect
from store.errors import InputError, ModelError, PredstoreError, RunFailed
from store.migrate import prepare
from store.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ENTITY_COL = "entity_id"

#: Called after each written batch with (rows read so far, total rows or None).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ScoreRequest:
    """What to score, with which model, and how strictly."""

    path: Path
    model_name: str
    version: int | None = None
    entity_col: str | None = None
    partition_key: str | None = None
    max_reject_fraction: float = 0.05
    force: bool = False


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_partition(settings: Settings, request: ScoreRequest, *, progress: Progress | None = None) -> RunResult:
    """Score one partition and publish it; raises `RunFailed` (carrying the result) if the run fails."""
    if not 0 <= request.max_reject_fraction <= 1:
        from store.errors import ConfigError

        raise ConfigError(f"--max-reject-fraction {request.max_reject_fraction} must be between 0 and 1")
    url = prepare(settings)
    partition = reader.open_partition(request.path, key=request.partition_key)
    with connect(url, autocommit=True, application_name="predstore-score") as control:
        model_row = registry.get_model(control, request.model_name, version=request.version)
        entity_col = request.entity_col or model_row.feature_schema.get("entity_col") or DEFAULT_ENTITY_COL
        result = RunResult(status="running", model=model_row.name, model_version=model_row.version,
                           partition=partition.key)
        for run_id in ledger.reap_abandoned(control, model_name=model_row.name, partition_key=partition.key):
            log.warning("run %s was left running by a process that died; marked abandoned", run_id)
        published = ledger.find_published(control, model_row.name, partition.key)
        if (not request.force and published and published["model_version"] == model_row.version
                and published["input_fingerprint"] == partition.fingerprint):
            return _skip(control, model_row, partition, published, result)
        run_id = ledger.start_run(
            control, model_name=model_row.name, model_version=model_row.version, model_sha256=model_row.sha256,
            partition_key=partition.key, input_uri=partition.uri, code_version=_code_version(),
            host=socket.gethostname(), pid=os.getpid(),
        )
        result.run_id = run_id
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            _run(url, control, run_id, model_row, partition, entity_col, request, result, progress)
        except (PredstoreError, psycopg.Error, KeyboardInterrupt) as exc:
            message = _describe(exc)
            result.status, result.message = "failed", message
            _measure(result, started)
            ledger.finish_run(control, run_id, status="failed", error=message,
                              input_fingerprint=_fingerprint_if_readable(partition),
                              **_counts(result), cpu_seconds=time.process_time() - cpu_started)
            if isinstance(exc, KeyboardInterrupt):
                raise
            failure = RunFailed(f"run {run_id} failed, nothing was published: {message}")
            failure.result = result  # type: ignore[attr-defined]
            raise failure from exc
        finally:
            ledger.release_run(control, run_id)
        _apply_retention(control, model_row.name, partition.key, keep=settings.keep_runs)
    return result


def _run(url: str, control: psycopg.Connection, run_id: int, model_row: registry.ModelVersion,
         partition: reader.Partition, entity_col: str, request: ScoreRequest, result: RunResult,
         progress: Progress | None) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    schema = model_row.feature_schema
    model = load_model(model_row.artifact_uri, model_row.sha256, model_row.format)
    columns = required_columns(schema, entity_col)
    check_columns(schema, entity_col, reader.columns_of(partition))
    total = reader.count_rows(partition)
    limit = None if total is None else request.max_reject_fraction * total
    stages = {"read_validate_s": 0.0, "predict_s": 0.0, "write_s": 0.0}
    digest = _Digest()
    base = profiles.get_baseline(control, model_row.name, model_row.version)
    known = {c["name"]: c.get("categories") for c in schema["columns"] if c["kind"] == "categorical"}
    feature_profile: dict[str, Any] = {}
    output_profile: dict[str, Any] = {}

    def count_features(checked: Validated) -> None:
        nonlocal feature_profile
        if base:
            feature_profile = profile.add(feature_profile, profile.profile_features(checked.features, base, known))
    out_columns = ["entity_id", "row_number", "prediction"]
    if model_row.task == "classification":
        out_columns.append("label")
        if model_row.classes is not None and len(model_row.classes) > 2:
            out_columns.append("scores")

    with connect(url, application_name="predstore-score") as writer, \
            connect(url, application_name="predstore-quarantine") as quarantine:

        def validated() -> Iterator[Validated]:
            with predictions.copy_rejects(quarantine) as rejects:
                yield from _validated(partition, columns, schema, entity_col, result, stages, limit,
                                      on_rejects=lambda rows: [rejects.write_row((run_id, *r)) for r in rows],
                                      on_valid=count_features)

        try:
            predictions.create_run_table(writer, run_id)
            with predictions.copy_predictions(writer, run_id, out_columns) as write:
                scored = _scored(background(validated(), name="read"), model, schema, stages)
                done = 0
                for checked, out in background(scored, name="predict"):
                    t = time.perf_counter()
                    done += len(checked.entity_ids) + len(checked.rejects)
                    if out is not None:
                        write(_record_batch(checked, out, out_columns))
                        digest.update(checked.entity_ids, out)
                        result.rows_scored += len(checked.entity_ids)
                        if base:
                            output_profile = profile.add(output_profile, profile.profile_outputs(out, base))
                    stages["write_s"] += time.perf_counter() - t
                    if progress:
                        progress(done, total)
            _check_rejects(result, request.max_reject_fraction)
            t = time.perf_counter()
            result.rows_duplicate = predictions.index_run_table(writer, run_id)
            stages["index_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if base:
                profiles.insert_run_profile(writer, run_id, {**feature_profile, **output_profile})
            result.superseded_run = predictions.publish(writer, run_id, model_name=model_row.name,
                                                        partition_key=partition.key)
            result.status = "published"
            result.stages = {k: round(v, 3) for k, v in stages.items()}
            _measure(result, started)
            ledger.finish_run(writer, run_id, status="published", input_fingerprint=partition.fingerprint,
                              predictions_digest=digest.hexdigest(),
                              details={"stages": result.stages, "entity_col": entity_col},
                              cpu_seconds=time.process_time() - cpu_started, **_counts(result))
            quarantine.commit()
            writer.commit()
            stages["publish_s"] = time.perf_counter() - t
        finally:
            # Rejected rows of a failed run are kept, so the user can see why it failed.
            if result.status != "published":
                writer.rollback()
                if not quarantine.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    quarantine.commit()
    verb = f"superseding run {result.superseded_run}" if result.superseded_run else "first run of this partition"
    result.message = (f"published run {run_id}: {result.rows_scored - result.rows_duplicate} predictions, "
                      f"{result.rows_rejected} rejected, {result.rows_duplicate} duplicate ids ({verb})")


def _validated(partition: reader.Partition, columns: list[str], schema: dict[str, Any], entity_col: str,
               result: RunResult, stages: dict[str, float], limit: float | None,
               on_rejects: Callable[[list[tuple[int, str | None, str, dict[str, Any]]]], Any],
               on_valid: Callable[[Validated], Any] = lambda checked: None) -> Iterator[Validated]:
    """Read and validate the partition batch by batch, counting into ``result``."""
    for batch in reader.batches(partition, columns):
        t = time.perf_counter()
        checked = validate(batch, schema, entity_col=entity_col, first_row=result.rows_in + 1)
        if checked.rejects:
            on_rejects(checked.rejects)
        on_valid(checked)
        result.rows_in += batch.num_rows
        result.rows_rejected += len(checked.rejects)
        stages["read_validate_s"] += time.perf_counter() - t
        if limit is not None and result.rows_rejected > limit:
            return  # already over the limit: stop reading; the rejects so far are kept for diagnosis
        yield checked


def _scored(batches: Iterator[Validated], model: Any, schema: dict[str, Any],
            stages: dict[str, float]) -> Iterator[tuple[Validated, Scores | None]]:
    """Score each validated batch; the model's own errors become `ModelError`."""
    for checked in batches:
        t = time.perf_counter()
        try:
            out = predict(model, checked.features, schema=schema) if len(checked.features) else None
        except Exception as exc:  # the model's own error, whatever its type
            raise ModelError(f"the model failed to predict: {type(exc).__name__}: {exc}") from exc
        stages["predict_s"] += time.perf_counter() - t
        yield checked, out


def _record_batch(checked: Validated, out: Scores, columns: list[str]) -> pa.RecordBatch:
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


class _Digest:
    """sha256 of a run's predictions (ids, values, labels, class scores), however they were batched."""

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


def _check_rejects(result: RunResult, max_fraction: float) -> None:
    if result.rows_in == 0:
        raise InputError("the partition has no rows")
    fraction = result.rows_rejected / result.rows_in
    if fraction > max_fraction:
        raise InputError(
            f"{result.rows_rejected} of {result.rows_in} rows read were rejected ({fraction:.1%}, more than "
            f"--max-reject-fraction {max_fraction:.1%}); see `predstore runs show {result.run_id}`"
        )


def _skip(control: psycopg.Connection, model_row: registry.ModelVersion, partition: reader.Partition,
          published: dict[str, Any], result: RunResult) -> RunResult:
    result.run_id = ledger.record_skipped(
        control, model_name=model_row.name, model_version=model_row.version, model_sha256=model_row.sha256,
        partition_key=partition.key, input_uri=partition.uri, input_fingerprint=partition.fingerprint,
        code_version=_code_version(), host=socket.gethostname(), pid=os.getpid(),
        published_run=published["run_id"],
    )
    result.status = "skipped"
    result.message = (f"skipped: run {published['run_id']} already published partition {partition.key!r} with "
                      f"{model_row.name} v{model_row.version} and the same input; --force scores it again")
    return result


def _apply_retention(control: psycopg.Connection, model_name: str, partition_key: str, *, keep: int) -> None:
    for old in ledger.superseded_runs(control, model_name, partition_key, keep=keep):
        predictions.drop_run_table(control, old)
        ledger.mark_dropped(control, old)
        log.info("dropped the rows of superseded run %s (keeping %s runs per partition)", old, keep)


def _fingerprint_if_readable(partition: reader.Partition) -> str | None:
    try:
        return partition.fingerprint
    except InputError:
        return None


def _measure(result: RunResult, started: float) -> None:
    result.duration_s = round(time.perf_counter() - started, 3)
    result.rows_per_s = round(result.rows_in / result.duration_s, 1) if result.duration_s else 0.0
    result.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _counts(result: RunResult) -> dict[str, Any]:
    return {"rows_in": result.rows_in, "rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected,
            "rows_duplicate": result.rows_duplicate, "duration_s": result.duration_s,
            "rows_per_s": result.rows_per_s, "peak_rss_bytes": result.peak_rss_bytes}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, psycopg.Error):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"database error: {first}"
    return str(exc)


def _code_version() -> str:
    try:
        return package_version("predstore")
    except Exception:
        return "unknown"


def verify_run(settings: Settings, run_id: int) -> dict[str, Any]:
    """Re-score a run's recorded input with its recorded model version, without publishing,
    and compare the digest of the predictions with the one recorded."""
    url = prepare(settings)
    with connect(url, autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        model_row = registry.get_model(conn, run["model_name"], version=run["model_version"])
    if not run["predictions_digest"]:
        raise InputError(f"run {run_id} has no recorded digest (status {run['status']}); only published runs verify")
    path = reader.path_of(run["input_uri"])
    partition = reader.open_partition(path, key=run["partition_key"])
    if partition.fingerprint != run["input_fingerprint"]:
        raise InputError(f"the input {path} has changed since run {run_id} read it; it cannot be replayed")
    entity_col = (run["details"] or {}).get("entity_col", DEFAULT_ENTITY_COL)
    model = load_model(model_row.artifact_uri, model_row.sha256, model_row.format)
    columns = required_columns(model_row.feature_schema, entity_col)
    result = RunResult(status="verifying", model=model_row.name, model_version=model_row.version,
                       partition=partition.key, run_id=run_id)
    stages = {"read_validate_s": 0.0, "predict_s": 0.0}
    digest = _Digest()
    batches = _validated(partition, columns, model_row.feature_schema, entity_col, result, stages, None,
                         lambda rows: None)
    for checked, out in _scored(batches, model, model_row.feature_schema, stages):
        if out is not None:
            digest.update(checked.entity_ids, out)
    return {"run_id": run_id, "recorded": run["predictions_digest"], "recomputed": digest.hexdigest(),
            "match": digest.hexdigest() == run["predictions_digest"], "rows_in": result.rows_in}
