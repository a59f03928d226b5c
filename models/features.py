"""A model's feature schema: what columns it takes, of what kind, and what it tolerates.

Pure functions: a fitted estimator (and optionally its training frame) in, a `FeatureSchema` out.
The schema is recorded at registration and drives validation of every batch scored later.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from store.errors import ModelError
from store.features import FeatureColumn, FeatureSchema

#: Most distinct values recorded for a categorical column; beyond it unseen values are not checked.
MAX_CATEGORIES = 10_000
#: A value no training set contains, used to ask the model whether it accepts unseen categories.
UNSEEN_PROBE = "\x00predstore-unseen-category"


def task_of(model: Any) -> str:
    """'classification' for estimators with predict_proba or a classifier tag, else 'regression'."""
    return "classification" if is_classifier(model) else "regression"


def infer_schema(model: Any, train: pd.DataFrame | None = None, *,
                 declared: dict[str, str] | None = None) -> FeatureSchema:
    """The feature schema of a fitted model: column names, kinds, dtypes and categories.

    Columns come from the model's ``feature_names_in_`` (else from ``train``, else from
    ``declared``, an MLflow signature's {name: kind}). Kinds and categories come from ``train``
    when given; without it from ``declared``, else from the model itself (`model_kinds`: a
    ColumnTransformer's encoders take text, its 'drop' columns are left out); a column none of
    them tells about is marked ``assumed`` numeric, and validation reads it as text where a
    partition holds text that is not numbers. ``kinds_from`` says which applied. Then
    the model is probed, once, to learn whether it accepts missing values per column and unseen
    categories.
    """
    names = getattr(model, "feature_names_in_", None)
    by_name = names is not None
    if names is None:
        if train is not None:
            names = [c for c in train.columns][: getattr(model, "n_features_in_", len(train.columns))]
        elif declared:
            names = list(declared)
        else:
            raise ModelError(
                "the model was fitted without column names; fit it on a pandas DataFrame, "
                "or pass --train-data so predstore knows its feature columns"
            )
    names = [str(n) for n in names]
    columns = []
    if train is not None:
        for name in names:
            if name not in train.columns:
                raise ModelError(f"the training data has no column {name!r}, which the model takes")
            columns.append(_column(name, train[name]))
        kinds_from = "training data"
    else:
        structure = model_kinds(model, names)
        for name in names:
            kind, categories = structure.get(name, (None, None))
            if kind == "drop":
                if by_name:  # the model never reads it: a partition need not have it
                    continue
                kind = None
            if declared and declared.get(name):  # the signature says; the encoder may know the categories
                kind, categories = declared[name], categories if declared[name] == kind else None
            columns.append(_declared(name, kind, categories))
        kinds_from = "MLflow signature" if declared else "model"
    sample = _sample(columns, train)
    probed = []
    for column in columns:
        missing = None if column.categorical else np.nan
        probed.append(replace(column, nulls_ok=_accepts(model, sample, column.name, missing),
                              unseen_ok=_accepts(model, sample, column.name, UNSEEN_PROBE)
                              if column.categorical else None))
    return FeatureSchema(columns=tuple(probed), by_name=by_name, kinds_from=kinds_from)


def model_kinds(model: Any, names: list[str]) -> dict[str, tuple[str, list[str] | None]]:
    """What a fitted model tells of its input columns' kinds: {name: (kind, categories)}, kind one of
    'categorical' (an encoder or imputer fitted on text), 'numeric' (one fitted on numbers, or a
    scaler) or 'drop'; a column it says nothing of is absent. Reads a Pipeline's first step when
    that is a ColumnTransformer (or a Pipeline that starts with one)."""
    step = model
    while hasattr(step, "steps"):  # a Pipeline: its first step sees the raw columns
        step = step.steps[0][1]
    if not hasattr(step, "transformers_"):
        return {}
    indices = getattr(step, "_transformer_to_input_indices", None)
    if not isinstance(indices, dict):
        return {}
    kinds: dict[str, tuple[str, list[str] | None]] = {}
    for label, transformer, _ in step.transformers_:
        for number, index in enumerate(indices.get(label, [])):
            if index >= len(names):
                continue
            found = ("drop", None) if isinstance(transformer, str) and transformer == "drop" \
                else _transformer_kind(transformer, number)
            if found is not None:
                kinds[names[index]] = found
    return kinds


#: Fitted attributes of transformers that only take numbers (scalers, discretizers, power transforms).
_NUMERIC_STATE = ("mean_", "scale_", "center_", "data_min_", "bin_edges_", "quantiles_", "lambdas_")


def _transformer_kind(transformer: Any, position: int) -> tuple[str, list[str] | None] | None:
    """The kind of the ``position``-th column ``transformer`` (or a Pipeline of them) was fitted on:
    an encoder's categories tell (and list the categories), else an imputer's statistics, else a
    scaler's state."""
    steps = [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]
    for step in steps:
        categories = getattr(step, "categories_", None)
        if isinstance(categories, list) and position < len(categories):
            values = np.asarray(categories[position])
            if values.dtype.kind in "OUS":
                texts = [str(v) for v in values.tolist() if v is not None and v == v]
                return "categorical", sorted(texts) if len(texts) <= MAX_CATEGORIES else None
            return "numeric", None
    for step in steps:
        statistics = getattr(step, "statistics_", None)
        if isinstance(statistics, np.ndarray) and position < len(statistics):
            return ("categorical", None) if statistics.dtype.kind in "OUS" else ("numeric", None)
        if any(hasattr(step, attribute) for attribute in _NUMERIC_STATE):
            return "numeric", None
    return None


def _declared(name: str, kind: str | None, categories: list[str] | None) -> FeatureColumn:
    """A column whose kind a signature or the model gave (``None``: nothing did, assumed numeric)."""
    if kind == "categorical":
        return FeatureColumn(name, "categorical", "string", None if categories is None else tuple(categories))
    return FeatureColumn(name, "numeric", "float64", assumed=kind is None)


def model_input(schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """The frame's features in the shape the model was fitted on (named columns, or an array)."""
    return _shaped(schema.names, schema.by_name, frame)


def _shaped(names: list[str], by_name: bool, frame: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    features = frame if list(frame.columns) == names else frame[names]
    return features if by_name else features.to_numpy()


def _column(name: str, series: pd.Series | None) -> FeatureColumn:
    if series is None or pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return FeatureColumn(name, "numeric", str(series.dtype) if series is not None else "float64")
    values = series.dropna().astype(str).unique()
    categories = tuple(sorted(values.tolist())) if len(values) <= MAX_CATEGORIES else None
    return FeatureColumn(name, "categorical", "string", categories)


def _sample(columns: list[FeatureColumn], train: pd.DataFrame | None) -> pd.DataFrame:
    """One valid row to probe the model with."""
    row: dict[str, Any] = {}
    for column in columns:
        if train is not None:
            valid = train[column.name].dropna()
            row[column.name] = valid.iloc[0] if len(valid) else np.nan
        elif column.categorical:
            row[column.name] = (column.categories or ("a",))[0]
        else:
            row[column.name] = 0.0
    return pd.DataFrame([row])


def _accepts(model: Any, sample: pd.DataFrame, name: str, value: Any) -> bool:
    probe = sample.copy()
    probe[name] = pd.Series([value], dtype=object if isinstance(value, str) or value is None else float)
    try:
        model.predict(_shaped(list(sample.columns), getattr(model, "feature_names_in_", None) is not None, probe))
    except Exception:  # the model said no: any error means it cannot take this value
        return False
    return True
