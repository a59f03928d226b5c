"""Scoring a frame with a fitted model: the one place predictions are made."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from batch.features import model_input, task_of


def score_frame(model: Any, frame: pd.DataFrame, *, schema: dict[str, Any] | None = None) -> pd.DataFrame:
    """Predictions for every row of ``frame``, in order, indexed like it.

    Columns: ``prediction`` (the value, or for a classifier the probability of the positive class
    when binary and of the predicted class otherwise), ``label`` (classifiers: the predicted class,
    as text) and ``scores`` (multiclass: the probabilities in ``model.classes_`` order).
    ``schema`` (recorded at registration) picks and orders the columns; without it, the model's
    ``feature_names_in_`` do.
    """
    if schema is None:
        names = getattr(model, "feature_names_in_", None)
        schema = {"columns": [{"name": str(n)} for n in (names if names is not None else frame.columns)],
                  "by_name": names is not None}
    features = model_input(schema, frame)
    if task_of(model) == "regression":
        return pd.DataFrame({"prediction": np.asarray(model.predict(features), dtype=np.float64)}, index=frame.index)
    proba = np.asarray(model.predict_proba(features), dtype=np.float64)
    classes = np.asarray(model.classes_).astype(str)
    best = proba.argmax(axis=1)
    result = pd.DataFrame({"label": classes[best]}, index=frame.index)
    if len(classes) == 2:
        result.insert(0, "prediction", proba[:, 1])
    else:
        result.insert(0, "prediction", proba[np.arange(len(best)), best])
        result["scores"] = list(proba)
    return result
