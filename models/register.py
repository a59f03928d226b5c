"""Registering a model version: store the artifact, infer its schema, measure it, record it.

The artifact is read once: its types are checked, it is loaded and it is stored from that one
buffer, so a file swapped while registration runs changes nothing (a second read could load
types nobody reviewed, or store other bytes than the ones measured).
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_predict
from sklearn.utils.validation import check_is_fitted

from models import calibration, profile
from models.artifacts import artifact_format, store_artifact
from models.features import infer_schema, model_input, task_of
from models.predict import Scores, classifier_scores, predict
from store import audit, profiles, registry
from store import performance as perf
from store.db import connect
from store.errors import ConfigError, InputError, ModelError
from store.features import FeatureSchema
from store.migrate import prepare
from store.settings import Settings


@dataclass(frozen=True)
class MlflowOrigin:
    """Where a model fetched from MLflow came from, and the column kinds its signature declares."""

    uri: str  # as resolved: models:/churn/3 (an alias moves), runs:/<id>/model
    version: int | None = None  # the MLflow registry's version number
    declared: dict[str, str] | None = None  # column name -> 'numeric' or 'categorical'


def register_model(
    settings: Settings,
    artifact: Path,
    *,
    name: str,
    train_data: Path | None = None,
    target: str | None = None,
    validation_data: Path | None = None,
    baseline_cv: int | None = None,
    entity_col: str | None = None,
    current: bool = False,
    trust_joblib: bool = True,
    trusted_types: tuple[str, ...] = (),
    actor: str | None = None,
    origin: MlflowOrigin | None = None,
) -> registry.ModelVersion:
    """Register ``artifact`` as the next version of ``name``; the first version becomes current.

    Metrics (the reference the monitor compares realized performance with) are measured on
    ``validation_data`` when given, else on the training data, which flatters the model.

    The baseline of the model's outputs is profiled on rows it did not learn from: the
    ``validation_data``, else with ``baseline_cv`` K the out-of-fold predictions of K clones fitted
    on the training data; otherwise on the training rows (in-sample, where a flexible model is
    more confident than on any new data: the monitor then only warns of output drift).

    An artifact already registered under ``name`` (the same sha256) is not registered twice: its
    version is returned.

    ``trust_joblib=False`` refuses a joblib/pickle artifact (loading one runs any code it holds),
    and a skops artifact holding types skops does not trust by default unless they are in
    ``trusted_types``: the command line passes False, for files that come from elsewhere.

    Without training data the column kinds come from ``origin``'s signature, else from the model
    (see `models.features.infer_schema`); ``origin`` is recorded beside the sha256.
    """
    if target and not train_data:
        raise ConfigError("--target needs --train-data")
    if validation_data and not target:
        raise ConfigError("--validation-data needs --target (and --train-data)")
    if baseline_cv is not None and (not target or validation_data or baseline_cv < 2):
        raise ConfigError("--baseline-cv K needs --train-data and --target, K >= 2, and no --validation-data "
                          "(which is the output baseline when given)")
    fmt = artifact_format(artifact)
    try:
        data = artifact.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read model artifact {artifact}: {exc.strerror or exc}") from exc
    reviewed = check_trusted(data, name=artifact.name, fmt=fmt, trust_joblib=trust_joblib,
                             trusted_types=trusted_types)
    model = load_reviewed(data, fmt=fmt, reviewed=reviewed, name=artifact.name)
    if not hasattr(model, "predict"):
        raise ConfigError(f"{artifact.name} holds a {type(model).__name__}, not a fitted estimator with predict()")
    if not _fitted(model):
        raise ConfigError(f"{artifact.name} holds a {type(model).__name__} that is not fitted; fit it (on a pandas "
                          "DataFrame, so that it knows its column names) before saving it")
    train = read_frame(train_data) if train_data else None
    if train is not None and target and target not in train.columns:
        raise ConfigError(f"--target {target!r} is not a column of {train_data}")
    validation = read_frame(validation_data) if validation_data else None
    if validation is not None and target and target not in validation.columns:
        raise ConfigError(f"--target {target!r} is not a column of {validation_data}")
    measured = measure(model, train, validation, target=target, baseline_cv=baseline_cv, entity_col=entity_col,
                       declared=origin.declared if origin else None)
    return record(settings, name, data, artifact.suffix, measured, fmt=fmt, reviewed=reviewed, current=current,
                  actor=actor, origin=origin)


@dataclass(frozen=True)
class Measured:
    """What registration learns of a fitted model from its data, before anything is stored."""

    schema: FeatureSchema
    task: str
    classes: list[Any] | None
    #: Metrics on the validation data (else in-sample on the training data); None without a target.
    scores: dict[str, Any] | None
    #: The output calibration the monitor's estimates before labels need (validation data only).
    calibrated: calibration.Calibration | None
    #: The drift baseline: the features' and the outputs' profiles (training data only).
    base: list[dict[str, Any]] | None


def measure(model: Any, train: pd.DataFrame | None, validation: pd.DataFrame | None, *, target: str | None,
            baseline_cv: int | None = None, entity_col: str | None = None,
            declared: dict[str, str] | None = None) -> Measured:
    """Measure ``model`` on its frames (pure: nothing read or written): its feature schema, task
    and classes, its metrics, its output calibration and the drift baseline."""
    features = train.drop(columns=[target]) if train is not None and target else train
    schema = infer_schema(model, features, declared=declared).with_entity_col(entity_col)
    task = task_of(model)
    classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_] if task == "classification" \
        else None
    evaluated = validation if validation is not None else train
    scores = training_metrics(model, evaluated, target, schema=schema, task=task) \
        if evaluated is not None and target else None
    if scores is not None:
        scores["evaluated_on"] = "validation data" if validation is not None else "training data (in-sample)"
    calibrated = None
    if validation is not None and target:
        outputs_v = _predict(model, validation.drop(columns=[target]), schema)
        calibrated = calibration.fit_scores(outputs_v.prediction, outputs_v.proba, validation[target].tolist(),
                                            classes=classes, task=task)
    base = None
    if train is not None and features is not None:
        outputs, source = output_scores(model, train, schema, task=task, validation=validation, target=target,
                                        cv=baseline_cv)
        base = profile.baseline(features, schema, outputs, source=source)
    return Measured(schema=schema, task=task, classes=classes, scores=scores, calibrated=calibrated, base=base)


def record(settings: Settings, name: str, data: bytes, suffix: str, measured: Measured, *, fmt: str,
           reviewed: tuple[str, ...], current: bool = False, actor: str | None = None,
           origin: MlflowOrigin | None = None) -> registry.ModelVersion:
    """Store the artifact's bytes ``data`` and record them as the next version of ``name`` with what
    was ``measured`` (the same bytes again return their version: nothing is registered twice)."""
    url = prepare(settings)
    with tempfile.TemporaryDirectory(prefix="predstore-register-") as private:  # 0700: ours alone
        buffer = Path(private) / f"artifact{suffix.lower()}"
        buffer.write_bytes(data)
        uri, sha256, fmt = store_artifact(buffer, settings.artifacts_dir)
    with connect(url) as conn, conn.transaction():
        version = registry.next_version(conn, name)
        same = registry.find_by_sha256(conn, name, sha256)
        if same is not None:  # registering the same artifact again is a no-op
            if current and "current" not in same.aliases:
                registry.set_alias(conn, name, "current", same.version)
            return registry.get_model(conn, name, version=same.version)
        registry.insert_model(conn, name=name, version=version, artifact_uri=uri, sha256=sha256, format=fmt,
                              task=measured.task, feature_schema=measured.schema, classes=measured.classes,
                              training_metrics=measured.scores,
                              trusted_types=list(reviewed) if fmt == "skops" else None,
                              mlflow_uri=origin.uri if origin else None,
                              mlflow_version=origin.version if origin else None)
        if measured.base:
            profiles.insert_baseline(conn, name, version, measured.base)
        if measured.calibrated:
            perf.insert_calibration(conn, name, version, measured.calibrated.to_json())
        if current or version == 1:
            registry.set_alias(conn, name, "current", version)
        audit.record(conn, "model.register", target=f"{name} v{version}", actor=actor,
                     details={"sha256": sha256, "format": fmt, "current": current or version == 1,
                              **({"mlflow_uri": origin.uri} if origin else {})})
        return registry.get_model(conn, name, version=version)


def _fitted(model: Any) -> bool:
    """False for a scikit-learn estimator that was never fitted; True for one that was, and for any
    other object with predict() (scikit-learn cannot tell: its predictions will)."""
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    except TypeError:  # not a scikit-learn estimator
        return True
    return True


def check_trusted(data: bytes, *, name: str, fmt: str, trust_joblib: bool,
                  trusted_types: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Refuse an artifact that would run code it holds when loaded, unless the user said to trust
    it; returns the types of a skops artifact that skops does not trust by default (each one
    reviewed: in ``trusted_types``)."""
    if fmt == "joblib" and not trust_joblib:
        raise ConfigError(f"{name}: a joblib/pickle file runs any code it holds when loaded; save models "
                          "from elsewhere with skops (.skops), or pass --trust-joblib for a file you built yourself")
    if fmt != "skops":
        return ()
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises many types for bytes that are not a skops archive
        raise ModelError(f"{name}: not a readable skops file ({type(exc).__name__}: {exc})") from exc
    unknown = sorted(set(untrusted) - set(trusted_types))
    if unknown:
        raise ConfigError(f"{name} holds types skops does not trust by default: {', '.join(unknown)}; "
                          "review them, then pass --trust-type for each")
    return tuple(sorted(untrusted))


def load_reviewed(data: bytes, *, fmt: str, reviewed: tuple[str, ...], name: str) -> Any:
    """The model in ``data``; a skops one loaded trusting exactly the ``reviewed`` types."""
    try:
        if fmt == "skops":
            import skops.io as sio

            return sio.loads(data, trusted=list(reviewed))
        import joblib

        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything; say what happened in one line
        raise ModelError(f"{name}: the model could not be loaded ({type(exc).__name__}: {exc})") from exc


def output_scores(model: Any, train: pd.DataFrame, schema: FeatureSchema, *, task: str,
                  validation: pd.DataFrame | None, target: str | None, cv: int | None) -> tuple[Scores, str]:
    """The model's outputs to profile as its output baseline, and where they come from."""
    if validation is not None and target:
        return _predict(model, validation.drop(columns=[target]), schema), "validation"
    if cv is None or not target:
        return _predict(model, train.drop(columns=[target]) if target else train, schema), "in_sample"
    known = train.dropna(subset=[target])
    x, y = model_input(schema, known), known[target]
    try:
        if task == "regression":
            predicted = cross_val_predict(clone(model), x, y, cv=cv)
            return Scores(prediction=np.asarray(predicted, dtype=np.float64)), "cross_validation"
        proba = cross_val_predict(clone(model), x, y, cv=cv, method="predict_proba")
    except ValueError as exc:  # too few rows or too few of a class for K folds, and the like
        raise ConfigError(f"--baseline-cv {cv}: the out-of-fold predictions failed ({exc})") from exc
    return classifier_scores(np.asarray(proba, dtype=np.float64), model.classes_), "cross_validation"


def _predict(model: Any, features: pd.DataFrame, schema: FeatureSchema) -> Scores:
    try:
        return predict(model, features, schema=schema)
    except Exception as exc:  # the model's own error, whatever its type
        raise ModelError(f"the model cannot score its own training data ({type(exc).__name__}: {exc}); "
                         "check --train-data") from exc


def read_frame(path: Path) -> pd.DataFrame:
    """A whole Parquet or CSV file as a DataFrame (training data is read once, at registration)."""
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise InputError(f"{path}: cannot be read as {path.suffix.lstrip('.') or 'data'} ({exc})") from exc


def training_metrics(model: Any, frame: pd.DataFrame, target: str, *, schema: FeatureSchema,
                     task: str) -> dict[str, Any]:
    """Performance on the given labeled data (in-sample if it is the training set)."""
    known = frame.dropna(subset=[target])
    x, y = model_input(schema, known), known[target]
    result: dict[str, Any] = {"rows": len(known)}
    if task == "regression":
        predicted = model.predict(x)
        result.update(mae=metrics.mean_absolute_error(y, predicted),
                      rmse=float(np.sqrt(metrics.mean_squared_error(y, predicted))),
                      r2=metrics.r2_score(y, predicted))
    else:
        proba = model.predict_proba(x)
        predicted = model.classes_[proba.argmax(axis=1)]
        result.update(accuracy=metrics.accuracy_score(y, predicted),
                      f1_macro=metrics.f1_score(y, predicted, average="macro"),
                      log_loss=metrics.log_loss(y, proba, labels=model.classes_))
        if len(model.classes_) == 2:
            result["roc_auc"] = metrics.roc_auc_score(y, proba[:, 1])
    return {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in result.items()}
