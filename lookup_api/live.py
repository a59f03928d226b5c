"""Live scoring: rows a request sends, scored by a model version the worker loaded once, by the
rules a batch run applies (`models.validate`, `models.predict`); every prediction is recorded to the
store off the request path (`Recorder`).

Loaded only with ``PREDSTORE_API_LIVE_SCORING`` on (`predstore serve --live-scoring`): the lookup
service imports no model code without it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import psycopg
import pyarrow as pa

from models.artifacts import load_model
from models.predict import predict
from models.validate import ERASED, Erasures, validate
from store import erasure, live, registry
from store.errors import ModelError, PredstoreError, StoreUnavailable

T = TypeVar("T")
Read = Callable[[Callable[[psycopg.Connection], T]], T]

log = logging.getLogger("predstore.lookup_api.live")

#: The entity column a row may always use, whatever the model was registered with.
ENTITY_ID = "entity_id"
#: Model versions kept loaded per worker (the current one, a challenger, one asked by number).
LOADED = 4
#: Seconds a worker trusts the current version and the erasure list it read, if no notice came.
TRUST_SECONDS = 30.0


@dataclass(frozen=True)
class Loaded:
    """A model version, loaded."""

    version: registry.ModelVersion
    model: Any

    @property
    def entity_col(self) -> str:
        return str(self.version.feature_schema.entity_col or ENTITY_ID)


class LiveModels:
    """The versions this worker scores with, loaded at first use and kept (`LOADED` at most); which
    version is current, and each model's erasure list, read again after a notice or `TRUST_SECONDS`."""

    def __init__(self, read: Read[Any], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded: collections.OrderedDict[tuple[str, int], Loaded] = collections.OrderedDict()
        self._current: dict[str, tuple[int, Erasures, float]] = {}

    def invalidate(self, model: str) -> None:
        """``model``'s current version or erasure list may have changed (a publish, promotion or erasure notice)."""
        self._current.pop(model, None)

    def get(self, model: str, version: int | None) -> tuple[Loaded, Erasures]:
        """The version to score ``model`` with (the current one unless ``version``) and its erasure list."""
        known = self._current.get(model)
        if known is None or self._clock() - known[2] > TRUST_SECONDS:
            try:
                current, erasures = self._read(lambda conn: (registry.get_model(conn, model).version,
                                                             Erasures(*erasure.erased(conn, model))))
                known = self._current[model] = (current, erasures, self._clock())
            except StoreUnavailable:
                if known is None:
                    raise
                log.debug("the database is away: %s keeps scoring with version %d", model, known[0])
        wanted = known[0] if version is None else version
        with self._lock:
            found = self._loaded.get((model, wanted))
            if found is not None:
                self._loaded.move_to_end((model, wanted))
                return found, known[1]
        row = self._read(lambda conn: registry.get_model(conn, model, version=wanted))
        loaded = Loaded(row, load_model(row.artifact_uri, row.sha256, row.format, trusted=row.trusted_types))
        with self._lock:
            self._loaded[(model, wanted)] = loaded
            while len(self._loaded) > LOADED:
                self._loaded.popitem(last=False)
        return loaded, known[1]


def score(loaded: Loaded, erasures: Erasures, rows: list[dict[str, Any]]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Score ``rows`` (objects of column -> value): the predictions, in the rows' order, the
    rejected rows with their reason, as a batch run would reject them, and the features of each
    prediction's row as validated, as JSON text (what `Recorder` keeps for the monitor)."""
    schema = loaded.version.feature_schema
    columns = schema.names
    entity_col = loaded.entity_col
    required, read = set(columns), {entity_col, ENTITY_ID, *columns}
    ids: list[Any] = []
    reasons: list[str | None] = []
    for row in rows:  # one pass per row, in C where it can be: this loop is most of a big request's cost
        entity = row.get(entity_col, row.get(ENTITY_ID))
        ids.append(entity if entity is None or isinstance(entity, str | int) and not isinstance(entity, bool)
                   else repr(entity))
        if ids[-1] is not entity:
            reasons.append("the entity id must be text or a whole number")
            continue
        if not required <= row.keys():
            reasons.append(f"the row lacks column {next(c for c in columns if c not in row)!r}")
            continue
        odd = garbled = None
        for name, value in row.items():
            kind = type(value)  # what JSON parsing makes: exact types, no subclasses
            if kind is str:
                if garbled is None and not value.isascii() and name in read and not _utf8(value):
                    garbled = name
            elif (kind is dict or kind is list) and odd is None and name in required:
                odd = name
        reasons.append(f"column {odd!r} holds a JSON {type(row[odd]).__name__}; send a number or a string"
                       if odd else f"column {garbled!r} is not valid UTF-8" if garbled else None)
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    rejected = [{"entity_id": _shown(ids[i]), "reason": reason} for i, reason in enumerate(reasons) if reason]
    if not keep:
        return [], rejected, []
    arrays = {ENTITY_ID: _array([ids[i] for i in keep])}
    arrays.update({name: _array([rows[i][name] for i in keep]) for name in columns if name != ENTITY_ID})
    checked = validate(pa.RecordBatch.from_pydict(arrays), schema, entity_col=ENTITY_ID, first_row=0,
                       erasures=erasures)
    rejected += [{"entity_id": None if reason == ERASED else _shown(entity), "reason": reason}
                 for _, entity, reason, _ in checked.rejects]
    if not len(checked.features):
        return [], rejected, []
    try:
        out = predict(loaded.model, checked.features, schema=schema)
    except Exception as exc:  # the model's own error, whatever its type
        raise ModelError(f"the model failed to predict: {type(exc).__name__}: {exc}") from exc
    labels = out.labels
    version = loaded.version
    predictions = [{"entity_id": entity, "model": version.name, "model_version": version.version,
                    "prediction": float(out.prediction[i]) if not np.isnan(out.prediction[i]) else None,
                    "label": None if labels is None else str(labels[i]),
                    "scores": None if out.proba is None else out.proba[i].tolist(), "source": "live"}
                   for i, entity in enumerate(checked.entity_ids.to_pylist())]
    # One JSON object per row, written by pandas in C (a missing value or NaN as null): what
    # `Recorder` keeps for the monitor, cheap beside the prediction itself.
    return predictions, rejected, checked.features.to_json(orient="records", lines=True,
                                                            double_precision=15).splitlines()


def _array(values: list[Any]) -> pa.Array:
    """One column of the rows as Arrow infers it; as text when its values mix types (a number and a
    string), so that validation rejects the rows it must, naming the column."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _shown(entity: Any) -> str | None:
    return None if entity is None or (isinstance(entity, str) and not _utf8(entity)) else str(entity)[:256]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class Recorder:
    """Live predictions on their way to the store: requests add them, a thread writes them every
    `FLUSH_SECONDS` with COPY. While the database is away they wait, `capacity` at most; the rest are
    dropped and counted (``dropped``), never blocking a request."""

    FLUSH_SECONDS = 0.5
    BATCH = 10_000

    def __init__(self, write: Callable[[list[live.LivePrediction]], None], *, capacity: int,
                 on_written: Callable[[int], None] = lambda n: None,
                 on_dropped: Callable[[int], None] = lambda n: None) -> None:
        self._write = write
        self._capacity = capacity
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._queue: collections.deque[live.LivePrediction] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="predstore-live-recorder", daemon=True)
        self._thread.start()

    def add(self, predictions: list[dict[str, Any]], features: list[str] | None = None) -> None:
        now = datetime.now(UTC)
        rows = [live.LivePrediction(now, p["model"], p["model_version"], p["entity_id"], p["prediction"],
                                    p["label"], p["scores"], f)
                for p, f in zip(predictions, features or [None] * len(predictions), strict=True)]  # type: ignore[list-item]
        with self._lock:
            room = max(0, self._capacity - len(self._queue))
            self._queue.extend(rows[:room])
        if len(rows) > room:
            self._on_dropped(len(rows) - room)

    def waiting(self) -> int:
        return len(self._queue)

    def flush(self) -> bool:
        """Write what waits; False (keeping it) if the database did not take it."""
        while self._queue:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
            try:
                self._write(batch)
            except (PredstoreError, psycopg.Error) as exc:
                with self._lock:
                    self._queue.extendleft(reversed(batch))
                log.debug("live predictions wait for the database: %s", exc)
                return False
            self._on_written(len(batch))
        return True

    def _run(self) -> None:
        pause = self.FLUSH_SECONDS
        while not self._stop.wait(pause):
            pause = self.FLUSH_SECONDS if self.flush() else min(pause * 2, 10.0)

    def stop(self) -> None:
        """Stop the thread and write what waits, once."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

