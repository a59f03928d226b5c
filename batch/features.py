"""A model's feature schema: what columns it takes, of what kind, and what it tolerates.

Pure functions: a fitted estimator (and optionally its training frame) in, a JSON-able dict out.
The schema is recorded at registration and drives validation of every batch scored later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from store.errors import ModelError

#: Most distinct values recorded for a categorical column; beyond it unseen values are not checked.
MAX_CATEGORIES = 10_000
#: A value no training set contains, used to ask the model whether it accepts unseen categories.
UNSEEN_PROBE = "\x00predstore-unseen-category"


def task_of(model: Any) -> str:
    """'classification' for estimators with predict_proba or a classifier tag, else 'regression'."""
    return "classification" if is_classifier(model) else "regression"


def infer_schema(model: Any, train: pd.DataFrame | None = None) -> dict[str, Any]:
    """The feature schema of a fitted model: column names, kinds, dtypes and categories.

    Columns come from the model's ``feature_names_in_``; kinds and categories from ``train`` when
    given (otherwise every column is taken as numeric). Then the model itself is probed, once, to
    learn whether it accepts missing values per column and unseen categories.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        if train is None:
            raise ModelError(
                "the model was fitted without column names; fit it on a pandas DataFrame, "
                "or pass --train-data so predstore knows its feature columns"
            )
        names = [c for c in train.columns][: getattr(model, "n_features_in_", len(train.columns))]
    columns = []
    for name in map(str, names):
        if train is not None and name not in train.columns:
            raise ModelError(f"the training data has no column {name!r}, which the model takes")
        series = train[name] if train is not None else None
        columns.append(_column(name, series))
    schema = {"columns": columns, "by_name": bool(getattr(model, "feature_names_in_", None) is not None)}
    sample = _sample(schema, train)
    for column in columns:
        missing = None if column["kind"] == "categorical" else np.nan
        column["nulls_ok"] = _accepts(model, sample, column["name"], missing)
        if column["kind"] == "categorical":
            column["unseen_ok"] = _accepts(model, sample, column["name"], UNSEEN_PROBE)
    return schema


def model_input(schema: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """The frame's features in the shape the model was fitted on (named columns, or an array)."""
    names = [c["name"] for c in schema["columns"]]
    features = frame if list(frame.columns) == names else frame[names]
    return features if schema["by_name"] else features.to_numpy()


def _column(name: str, series: pd.Series | None) -> dict[str, Any]:
    if series is None or pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return {"name": name, "kind": "numeric", "dtype": str(series.dtype) if series is not None else "float64"}
    values = series.dropna().astype(str).unique()
    categories = sorted(values.tolist()) if len(values) <= MAX_CATEGORIES else None
    return {"name": name, "kind": "categorical", "dtype": "string", "categories": categories}


def _sample(schema: dict[str, Any], train: pd.DataFrame | None) -> pd.DataFrame:
    """One valid row to probe the model with."""
    row: dict[str, Any] = {}
    for column in schema["columns"]:
        name = column["name"]
        if train is not None:
            valid = train[name].dropna()
            row[name] = valid.iloc[0] if len(valid) else np.nan
        elif column["kind"] == "categorical":
            row[name] = (column.get("categories") or ["a"])[0]
        else:
            row[name] = 0.0
    return pd.DataFrame([row])


def _accepts(model: Any, sample: pd.DataFrame, name: str, value: Any) -> bool:
    probe = sample.copy()
    probe[name] = pd.Series([value], dtype=object if isinstance(value, str) or value is None else float)
    schema_like = {"columns": [{"name": c} for c in sample.columns],
                   "by_name": getattr(model, "feature_names_in_", None) is not None}
    try:
        model.predict(model_input(schema_like, probe))
    except Exception:  # the model said no: any error means it cannot take this value
        return False
    return True
