"""The Python facade over the jobs and the store: the same functions the commands call, with
frames in and frames out. No SQL here: reads go through `store`'s queries.

The jobs read files, so a frame is written to a temporary Parquet file for them, and their errors
speak of files and of the command's flags. `_in_python_terms` rewords what they raise once, here:
the frame the caller passed instead of its temporary file, ``target=`` instead of ``--target``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.errors import ConfigError, PredstoreError
from store.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from batch.runner import RunResult
    from monitor.results import MonitorResult
    from store.registry import ModelVersion


@dataclass(frozen=True)
class Store:
    """A prediction store: ``url`` (default ``PREDSTORE_DATABASE_URL``, else the embedded server)
    and ``home`` (default ``PREDSTORE_HOME``, else ``./.predstore``) for its artifacts and server."""

    url: str | None = None
    home: str | Path | None = None

    @property
    def settings(self) -> Settings:
        """The environment's settings, with this store's url and home where given."""
        settings = Settings.from_env()
        if self.url is not None:
            settings = replace(settings, database_url=self.url)
        if self.home is not None:
            settings = replace(settings, home=Path(self.home).expanduser())
        return settings

    def register(self, model: Any, *, name: str, train: Any = None, target: str | None = None,
                 validation: Any = None, entity_col: str | None = None, current: bool = False,
                 trusted_types: Sequence[str] = ()) -> ModelVersion:
        """Register a fitted estimator as the next version of ``name`` (saved with skops), with its
        training frame for the feature types, baselines and metrics (``target`` its label column),
        and a held-out ``validation`` frame to measure it on. The first version becomes current.

        ``model`` may also be an MLflow model URI (``models:/churn@champion``, ``models:/churn/3``,
        ``runs:/<run id>/model``; needs ``predstore[mlflow]``): the scikit-learn model it names is
        fetched, its signature gives the feature types, and the URI is recorded. Types in it that
        skops does not trust by default must be reviewed and listed in ``trusted_types``."""
        import skops.io as sio

        from models.register import register_model

        with tempfile.TemporaryDirectory(prefix="predstore-") as tmp:
            folder = Path(tmp)
            frames = {folder / "train.parquet": "the frame passed as train=",
                      folder / "validation.parquet": "the frame passed as validation="}
            with _in_python_terms(frames):
                options: dict[str, Any] = dict(
                    name=name, train_data=_parquet(train, folder / "train.parquet"), target=target,
                    validation_data=_parquet(validation, folder / "validation.parquet"), entity_col=entity_col,
                    current=current)
                if isinstance(model, str) and model.startswith(("models:/", "runs:/")):
                    from models.mlflow_source import register_from_mlflow

                    return register_from_mlflow(self.settings, model, trusted_types=tuple(trusted_types), **options)
                artifact = folder / f"{name}.skops"
                sio.dump(model, artifact)
                return register_model(self.settings, artifact, **options,
                                      trusted_types=tuple(sio.get_untrusted_types(file=artifact)))  # dumped here

    def model(self, name: str, *, version: int | None = None) -> ModelVersion | None:
        """The current version of ``name`` as registered (or ``version``), None if there is none."""
        from store import registry
        from store.errors import NotFound

        with self._connect() as conn:
            try:
                return registry.get_model(conn, name, version=version)
            except NotFound:
                return None

    def score(self, data: Any, *, model: str, entity_col: str | None = None, partition: str | None = None,
              version: int | None = None, force: bool = False, snapshot: bool = False,
              gate: bool | None = None) -> RunResult:
        """Score ``data`` (a DataFrame, an Arrow table, or the path or URI of a Parquet file, a
        folder of Parquet or a CSV file) with ``model`` and publish it as ``partition``: by default the file's
        name, or for a frame ``frame-`` and the start of its content's sha256, so scoring the same
        frame again is skipped unless ``force``. A ``snapshot`` is the model's whole served set: the
        entities it lacks stop being served. ``gate`` (default: the model's policy) holds a run that looks
        broken beside the last published batch, serving nothing of it, and raises `RunHeld`. Raises
        `RunFailed` if the run fails."""
        from batch.runner import ScoreRequest, score_partition

        if isinstance(data, str | Path):  # a path, or a URI (s3://, gs://, abfs://, file://) as the CLI takes it
            request = ScoreRequest(path=data, model_name=model, version=version, entity_col=entity_col,
                                   partition_key=partition, force=force, snapshot=snapshot,
                                   gate=gate)
            with _in_python_terms():
                return score_partition(self.settings, request)
        with tempfile.TemporaryDirectory(prefix="predstore-") as tmp:
            written = Path(tmp) / "frame.parquet"
            with _in_python_terms({written: "the frame passed as data"}):
                path = _parquet(data, written)
                assert path is not None
                key = partition or f"frame-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
                request = ScoreRequest(path=path, model_name=model, version=version, entity_col=entity_col,
                                       partition_key=key, force=force, snapshot=snapshot, gate=gate)
                return score_partition(self.settings, request)

    def labels(self, data: Any, *, model: str, entity_col: str, label_col: str, time_col: str | None = None,
               event_time: datetime | None = None) -> dict[str, int]:
        """Ingest the true outcomes in ``data`` (a frame, a file or an object-store URI) for ``model``, as
        `predstore labels ingest` does; returns what happened, counted."""
        from monitor.labels import ingest_labels
        from store import storage

        if isinstance(data, str | Path):  # a file, or an object-store URI: its time is its modification time
            with _in_python_terms():
                return ingest_labels(self.settings, storage.target(str(data)), model_name=model,
                                     entity_col=entity_col, label_col=label_col, time_col=time_col,
                                     event_time=event_time)
        with tempfile.TemporaryDirectory(prefix="predstore-") as tmp:
            written = Path(tmp) / "labels.parquet"
            with _in_python_terms({written: "the frame passed as data"}):
                path = _parquet(data, written)
                assert path is not None
                counts = ingest_labels(self.settings, path, model_name=model, entity_col=entity_col,
                                       label_col=label_col, time_col=time_col,
                                       event_time=event_time or datetime.now(UTC))
        return {key: value for key, value in counts.items() if key != "path"}  # the frame's file is gone

    def monitor(self, model: str) -> MonitorResult:
        """Check what is new for ``model`` (drift of the runs not checked yet, performance on the
        labels), record it and raise alerts, as `predstore monitor --model` does."""
        from monitor.runner import run_monitor

        return run_monitor(self.settings, model)

    def predictions(self, model: str, entity_ids: Sequence[str], *, version: int | None = None) -> pd.DataFrame:
        """The current published predictions of ``entity_ids`` (those that have one), as the lookup
        API answers them: one row per entity, with its run, partition, time, scores and whether it is the
        current version's (``version_current``)."""
        import pandas as pd

        from store import lookups

        with self._connect() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # as the API reads
            lookups.check_model(conn, model, version=version)
            rows = lookups.current_predictions_json(conn, model, [str(e) for e in entity_ids], version=version,
                                                    now=time.time(), max_age=None)
        frame = pd.DataFrame([json.loads(text) for _, _, text in rows],
                             columns=["entity_id", "model", "model_version", "run_id", "partition", "scored_at",
                                      "age", "stale", "prediction", "label", "scores", "version_current",
                                      "source"])
        frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
        return frame.drop(columns=["age", "stale"])

    def drift(self, model: str, since: datetime | None = None) -> pd.DataFrame:
        """The model's drift results, one row per check, column and metric, oldest first
        (the ``drift_over_time`` view), from checks of runs published since ``since``."""
        import pandas as pd

        from store import monitoring, registry

        with self._connect() as conn:
            registry.get_model(conn, model)  # NotFound names the models there are
            frame = pd.DataFrame(monitoring.drift_history(conn, model, limit=100_000))
        return _since(frame, since, ("published_at", "window_end"))

    def performance(self, model: str, since: datetime | None = None) -> pd.DataFrame:
        """The model's realized (and estimated) performance, one row per run or window and metric,
        oldest first (the ``performance_over_time`` view), since ``since``."""
        import pandas as pd

        from store import performance as perf
        from store import registry

        with self._connect() as conn:
            registry.get_model(conn, model)
            frame = pd.DataFrame(perf.performance_history(conn, model))
        return _since(frame, since, ("window_start", "published_at"))

    def training_set(self, model: str, since: datetime | None = None, until: datetime | None = None,
                     version: int | None = None) -> pd.DataFrame:
        """Every label of ``model`` matched to a served prediction (event time in [since, until), of
        ``version``), with the features exactly as that prediction's run read them: one row per
        labeled prediction, point in time (`models.training`)."""
        from models.training import training_set

        with self._connect() as conn:
            return training_set(conn, model, since=since, until=until, version=version)

    def _connect(self) -> Any:
        from store.db import connect
        from store.migrate import prepare

        return connect(prepare(self.settings), autocommit=True)


def _parquet(data: Any, path: Path) -> Path | None:
    """Write a DataFrame or an Arrow table to ``path`` as Parquet; a path is returned as it is."""
    if data is None:
        return None
    if isinstance(data, str | Path):
        return Path(data)
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(data, pa.Table):
        try:
            data = pa.Table.from_pandas(data, preserve_index=False)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise ConfigError(f"cannot use a {type(data).__name__} as data ({exc}); pass a pandas DataFrame, "
                              "a pyarrow Table, or the path of a Parquet or CSV file") from exc
    pq.write_table(data, path)
    return path


#: The jobs' command-line flags, as the keyword arguments of this module that stand for them.
_KEYWORDS = {"--train-data": "train=", "--validation-data": "validation=", "--target": "target=",
            "--entity-col": "entity_col=", "--label-col": "label_col=", "--time-col": "time_col=",
            "--partition": "partition=", "--version": "version=", "--force": "force=True",
            "--snapshot": "snapshot=True", "--current": "current=True", "--trust-type": "trusted_types="}
#: A flag, and the value after it if it is quoted or a number: ``--target 'y'`` becomes ``target='y'``.
_FLAG = re.compile(r"(?<![\w-])(?P<flag>--[a-z][a-z-]*[a-z])(?![\w-])(?: (?P<value>'[^']*'|\d+)(?!\w|\.\d))?")


def _reworded(message: str, frames: Mapping[Path, str] | None = None) -> str:
    """``message`` as a caller of this module should read it: each of ``frames``' temporary files
    named as the frame it holds, and the flags of `_KEYWORDS` as keyword arguments (pure)."""
    for path, name in (frames or {}).items():
        message = message.replace(path.as_uri(), name).replace(str(path), name)
    return _FLAG.sub(_keyword, message)


def _keyword(match: re.Match[str]) -> str:
    flag, value = match.group("flag", "value")
    word = _KEYWORDS.get(flag)
    if word is None:
        return match.group()
    if value is None:
        return word
    return word + value if word.endswith("=") else f"{word} {value}"


@contextmanager
def _in_python_terms(frames: Mapping[Path, str] | None = None) -> Iterator[None]:
    """Re-raise a predstore error met inside as the same error, its message `_reworded`."""
    try:
        yield
    except PredstoreError as exc:
        message = _reworded(str(exc), frames)
        if message == str(exc):
            raise
        reworded = type(exc).__new__(type(exc))  # the same class and attributes (a failed run's result...)
        reworded.__dict__.update(exc.__dict__)
        reworded.args = (message,)
        raise reworded.with_traceback(exc.__traceback__) from None


def _since(frame: pd.DataFrame, since: datetime | None, columns: tuple[str, str]) -> pd.DataFrame:
    """The rows whose first non-null of ``columns`` is at or after ``since`` (all rows if None)."""
    if since is None or frame.empty:
        return frame
    import pandas as pd

    moment = pd.Timestamp(since)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment
    when = pd.to_datetime(frame[columns[0]].fillna(frame[columns[1]]), utc=True)
    return frame[when >= moment].reset_index(drop=True)


#: The store the module functions use: the environment's, read at each call.
_DEFAULT = Store()


def register(model: Any, *, name: str, train: Any = None, target: str | None = None, validation: Any = None,
             entity_col: str | None = None, current: bool = False, trusted_types: Sequence[str] = ()) -> ModelVersion:
    """`Store.register` on the default store."""
    return _DEFAULT.register(model, name=name, train=train, target=target, validation=validation,
                             entity_col=entity_col, current=current, trusted_types=trusted_types)


def model(name: str, *, version: int | None = None) -> ModelVersion | None:
    """`Store.model` on the default store."""
    return _DEFAULT.model(name, version=version)


def score(data: Any, *, model: str, entity_col: str | None = None, partition: str | None = None,
          version: int | None = None, force: bool = False, snapshot: bool = False,
          gate: bool | None = None) -> RunResult:
    """`Store.score` on the default store."""
    return _DEFAULT.score(data, model=model, entity_col=entity_col, partition=partition, version=version,
                          force=force, snapshot=snapshot, gate=gate)


def labels(data: Any, *, model: str, entity_col: str, label_col: str, time_col: str | None = None,
           event_time: datetime | None = None) -> dict[str, int]:
    """`Store.labels` on the default store."""
    return _DEFAULT.labels(data, model=model, entity_col=entity_col, label_col=label_col, time_col=time_col,
                           event_time=event_time)


def monitor(model: str) -> MonitorResult:
    """`Store.monitor` on the default store."""
    return _DEFAULT.monitor(model)


def predictions(model: str, entity_ids: Sequence[str], *, version: int | None = None) -> pd.DataFrame:
    """`Store.predictions` on the default store."""
    return _DEFAULT.predictions(model, entity_ids, version=version)


def drift(model: str, since: datetime | None = None) -> pd.DataFrame:
    """`Store.drift` on the default store."""
    return _DEFAULT.drift(model, since)


def performance(model: str, since: datetime | None = None) -> pd.DataFrame:
    """`Store.performance` on the default store."""
    return _DEFAULT.performance(model, since)


def training_set(model: str, since: datetime | None = None, until: datetime | None = None,
                 version: int | None = None) -> pd.DataFrame:
    """`Store.training_set` on the default store."""
    return _DEFAULT.training_set(model, since, until, version)
