"""Calibrated performance estimates before labels arrive (CBPE and DLE, in NannyML's manner).

CBPE reads a classifier's expected accuracy off its probabilities: a row predicted as class c is
right with probability p(c). That holds only for calibrated probabilities, and most models' are
not (naive Bayes and boosted trees are over-confident), so at registration a per-class isotonic
map from score to observed frequency is fitted on the validation data and kept with the version;
the estimate uses the calibrated probabilities, with a band from the sum of p(1 - p) (the spread
of the realized accuracy if the calibration holds). For a regressor, the expected absolute error
is read off a small model of |error| against the prediction fitted on the validation residuals
(binned means: direct loss estimation with the prediction as its one feature). The reference
value of either is the estimate on the validation data itself, so that a drop means the inputs
moved, not that the estimate differs from a realized value. Pure functions over arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from models.performance import canonical_all, expected_counts, expected_from_counts

Z95 = 1.959963984540054
#: Prediction bins of the expected-error model of a regressor.
ERROR_BINS = 20


@dataclass(frozen=True)
class Calibration:
    """What a version's estimates need: per-class isotonic knots (classifier) or the binned mean
    absolute error by prediction (regressor), and the estimate on the validation data."""

    task: str
    knots: list[tuple[list[float], list[float]]]
    reference: dict[str, float]
    rows: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(task=data["task"], knots=[(list(x), list(y)) for x, y in data["knots"]],
                   reference=dict(data["reference"]), rows=int(data["rows"]))

    def probabilities(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, rows summing to 1."""
        p = np.asarray(proba, dtype=np.float64)
        if p.shape[1] == 2:
            positive = np.interp(p[:, 1], *self.knots[0])
            return np.column_stack([1 - positive, positive])
        out = np.column_stack([np.interp(p[:, c], x, y) for c, (x, y) in enumerate(self.knots)])
        total = out.sum(axis=1, keepdims=True)
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])

    def expected_error(self, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A regressor's expected absolute error per row, and its expected square."""
        edges = self.knots[0][0]
        bins = np.clip(np.searchsorted(edges, predictions, side="right") - 1, 0, len(self.knots[0][1]) - 1)
        return np.asarray(self.knots[0][1])[bins], np.asarray(self.knots[1][1])[bins]

def fit_scores(prediction: np.ndarray, proba: np.ndarray | None, actual: Sequence[Any], *,
               classes: Sequence[Any] | None, task: str) -> Calibration | None:
    """Fit on a model's validation outputs (`models.predict.Scores` fields) and true values; None
    for a classifier whose validation labels hold fewer than two of its classes."""
    if task == "regression":
        values = pd.to_numeric(pd.Series(list(actual)), errors="coerce").to_numpy(dtype=np.float64)
        known = np.isfinite(values)
        return fit(np.asarray(prediction)[known], values[known], task=task)
    names = canonical_all(list(classes or []))
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index.get(a, -1) if a is not None else -1 for a in canonical_all(list(actual))])
    p = np.asarray(proba if proba is not None else np.column_stack([1 - prediction, prediction]), dtype=np.float64)
    keep = y >= 0
    if len(set(y[keep].tolist())) < 2:
        return None
    return fit(p[keep], y[keep], task=task)


def fit(proba_or_predictions: np.ndarray, actual: np.ndarray, *, task: str) -> Calibration:
    """Fit on validation data: ``proba_or_predictions`` the model's probabilities (classifier, in
    its classes' order) or predictions (regressor); ``actual`` the class index (classifier) or the
    true value (regressor)."""
    if task == "regression":
        predictions = np.asarray(proba_or_predictions, dtype=np.float64)
        error = np.abs(predictions - np.asarray(actual, dtype=np.float64))
        edges = np.unique(np.quantile(predictions, np.linspace(0, 1, ERROR_BINS + 1)))
        bins = np.clip(np.searchsorted(edges, predictions, side="right") - 1, 0, max(len(edges) - 2, 0))
        count = np.bincount(bins, minlength=max(len(edges) - 1, 1))
        moments = [np.where(count > 0, np.bincount(bins, weights=error ** power, minlength=len(count))
                            / np.maximum(count, 1), float(np.mean(error ** power))) for power in (1, 2)]
        calibration = Calibration(task, [(edges.tolist(), m.tolist()) for m in moments], {}, len(error))
        return Calibration(task, calibration.knots, {"mae": expected_mae(calibration, predictions)[0]}, len(error))
    p = np.asarray(proba_or_predictions, dtype=np.float64)
    y = np.asarray(actual, dtype=np.int64)
    columns = [1] if p.shape[1] == 2 else range(p.shape[1])
    knots = []
    for c in columns:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, c], (y == c).astype(float))
        knots.append((iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()))
    calibration = Calibration(task, knots, {}, len(y))
    reference = expected_from_counts(expected_counts(calibration.probabilities(p), p.argmax(axis=1)))
    return Calibration(task, knots, {k: v for k, v in reference.items() if v is not None}, len(y))


def expected_accuracy(calibration: Calibration | None, proba: np.ndarray) -> tuple[float, float, float]:
    """Expected accuracy of rows predicted as their most probable class, and its 95% band."""
    p = np.asarray(proba, dtype=np.float64)
    chosen = p.argmax(axis=1)
    right = (calibration.probabilities(p) if calibration else p)[np.arange(len(p)), chosen]
    n = len(p)
    value = float(right.mean())
    variance = float((right * (1 - right)).sum()) / n ** 2
    if calibration:  # the calibration itself was estimated from its validation rows
        variance += value * (1 - value) / calibration.rows
    half = Z95 * math.sqrt(variance)
    return value, max(value - half, 0.0), min(value + half, 1.0)


def expected_mae(calibration: Calibration, predictions: np.ndarray) -> tuple[float, float, float]:
    """Expected mean absolute error of a regressor's predictions, and its 95% band."""
    error, square = calibration.expected_error(np.asarray(predictions, dtype=np.float64))
    n = len(error)
    value = float(error.mean())
    spread = np.maximum(square - error ** 2, 0.0)
    half = Z95 * math.sqrt(float(spread.sum()) / n ** 2 + float(spread.mean()) / calibration.rows)
    return value, max(value - half, 0.0), value + half
