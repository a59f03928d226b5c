"""Scoring with a fitted model: the one place predictions are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.features import model_input, task_of
from store.features import FeatureColumn, FeatureSchema


@dataclass(frozen=True)
class Scores:
    """A model's output for a batch, as arrays.

    ``prediction`` is the value (regression) or, for a classifier, the probability of the positive
    class when binary and of the predicted class otherwise; ``best`` indexes the predicted class in
    ``classes``; ``proba`` holds every class's probability (multiclass only).
    """

    prediction: np.ndarray
    classes: np.ndarray | None = None
    best: np.ndarray | None = None
    proba: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.classes is None or self.best is None else self.classes[self.best]


def predict(model: Any, frame: pd.DataFrame, *, schema: FeatureSchema | None = None) -> Scores:
    """Score ``frame``. ``schema`` (recorded at registration) picks and orders the columns;
    without it, the model's ``feature_names_in_`` do."""
    if schema is None:
        names = getattr(model, "feature_names_in_", None)
        schema = FeatureSchema(columns=tuple(FeatureColumn(str(n), "numeric") for n in
                                             (names if names is not None else frame.columns)),
                               by_name=names is not None)
    features = model_input(schema, frame)
    if task_of(model) == "regression":
        return Scores(prediction=np.asarray(model.predict(features), dtype=np.float64))
    return classifier_scores(np.asarray(model.predict_proba(features), dtype=np.float64), model.classes_)


def classifier_scores(proba: np.ndarray, model_classes: Any) -> Scores:
    """A classifier's `Scores` from its probabilities (columns in ``model_classes`` order)."""
    classes = np.asarray([str(c) for c in model_classes], dtype=object)
    best = proba.argmax(axis=1)
    if len(classes) == 2:
        return Scores(prediction=np.ascontiguousarray(proba[:, 1]), classes=classes, best=best)
    return Scores(prediction=proba[np.arange(len(best)), best], classes=classes, best=best, proba=proba)


def score_frame(model: Any, frame: pd.DataFrame, *, schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Predictions for every row of ``frame``, in order, indexed like it (the job's own scoring).

    Columns: ``prediction``; for classifiers ``label`` (the predicted class, as text); for
    multiclass ``scores`` (the probabilities in ``model.classes_`` order).
    """
    scores = predict(model, frame, schema=schema)
    result = pd.DataFrame({"prediction": scores.prediction}, index=frame.index)
    if scores.labels is not None:
        result["label"] = scores.labels
    if scores.proba is not None:
        result["scores"] = list(scores.proba)
    return result
