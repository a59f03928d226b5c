"""Realized performance from matched labels, expected performance from probabilities, and how
either compares with the performance recorded at registration. Pure functions over arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

#: Metrics where a larger value is better; for every other one smaller is better.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1_macro", "roc_auc", "r2"})
#: The metric shown first for each task (in tables and the report).
HEADLINE = {"regression": "mae", "classification": "accuracy"}
#: Probabilities are clipped to this before a log loss.
LOG_LOSS_FLOOR = 1e-15


def regression(actual: Sequence[float], predicted: Sequence[float]) -> dict[str, float | None]:
    """MAE, RMSE, R² and MAPE (over non-zero actual values) of a regression."""
    y, yhat = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if not len(y):
        return dict.fromkeys(("mae", "rmse", "r2", "mape"))
    error = yhat - y
    nonzero = y != 0
    spread = float(np.sum(np.square(y - y.mean())))
    return {  # plain numpy: sklearn's input checks cost more than the sums, once per run and window
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(math.sqrt(np.mean(np.square(error)))),
        "r2": 1 - float(np.sum(np.square(error))) / spread if len(y) > 1 and spread > 0 else None,
        "mape": float(np.mean(np.abs(error[nonzero]) / np.abs(y[nonzero]))) if nonzero.any() else None,
    }


def classification(actual: Sequence[str], predicted: Sequence[str], proba: np.ndarray,
                   classes: Sequence[str]) -> dict[str, float | None]:
    """Accuracy, macro precision, recall and F1, ROC AUC, log loss and Brier score.

    ``proba`` holds each row's probabilities in ``classes`` order. Labels, predictions and classes
    are compared in their `canonical` form. Labels that are not one of the model's classes count
    as wrong for accuracy, precision, recall and F1, and are left out of the probability metrics.
    """
    y = np.asarray(canonical_all(actual), dtype=object)
    yhat = np.asarray(canonical_all(predicted), dtype=object)
    labels = np.asarray(canonical_all(classes), dtype=object).tolist()
    if not len(y):
        return dict.fromkeys(("accuracy", "precision", "recall", "f1_macro", "roc_auc", "log_loss", "brier"))
    result: dict[str, float | None] = {
        "accuracy": float(metrics.accuracy_score(y, yhat)),
        "precision": float(metrics.precision_score(y, yhat, labels=labels, average="macro", zero_division=0)),
        "recall": float(metrics.recall_score(y, yhat, labels=labels, average="macro", zero_division=0)),
        "f1_macro": float(metrics.f1_score(y, yhat, labels=labels, average="macro", zero_division=0)),
    }
    known = np.isin(y, labels)
    y_known, p_known = y[known], proba[known]
    onehot = (y_known[:, None] == np.asarray(labels, dtype=object)[None, :]).astype(np.float64)
    present = set(y_known.tolist())
    if len(present) == len(labels) and len(labels) >= 2:
        result["roc_auc"] = float(metrics.roc_auc_score(onehot[:, 1], p_known[:, 1])) if len(labels) == 2 \
            else float(metrics.roc_auc_score(y_known, p_known, multi_class="ovr", labels=labels))
    else:
        result["roc_auc"] = None  # undefined unless every class occurs
    if len(y_known):
        result["log_loss"] = float(metrics.log_loss(y_known, p_known, labels=labels))
        result["brier"] = float(np.mean(np.sum((onehot - p_known) ** 2, axis=1))) if len(labels) > 2 \
            else float(metrics.brier_score_loss(onehot[:, 1], p_known[:, 1]))
    else:
        result["log_loss"] = result["brier"] = None
    return result


def expected(proba: np.ndarray, predicted: Sequence[int] | np.ndarray) -> dict[str, float | None]:
    """Expected accuracy and macro precision, recall and F1 if the probabilities are calibrated
    (confidence-based performance estimation, as NannyML's CBPE): each row counts as a true
    positive of its predicted class with its probability, and as a false one otherwise."""
    return expected_from_counts(expected_counts(proba, predicted))


def expected_counts(proba: np.ndarray, predicted: Sequence[int] | np.ndarray) -> np.ndarray:
    """Expected true positives, false positives and false negatives per class (rows), and the
    number of rows in the last column: counts of batches add up."""
    p = np.asarray(proba, dtype=np.float64)
    n, k = p.shape
    chosen = np.zeros_like(p)
    chosen[np.arange(n), np.asarray(predicted, dtype=np.int64)] = 1.0
    tp = (chosen * p).sum(axis=0)          # predicted c, and it is c
    fp = (chosen * (1 - p)).sum(axis=0)    # predicted c, and it is not
    fn = ((1 - chosen) * p).sum(axis=0)    # predicted another, and it is c
    return np.column_stack([np.vstack([tp, fp, fn]), np.full(3, float(n))])


def expected_from_counts(counts: np.ndarray) -> dict[str, float | None]:
    """The metrics of `expected` from summed `expected_counts`."""
    tp, fp, fn = counts[:, :-1]
    n = counts[0, -1]
    if not n:
        return dict.fromkeys(("accuracy", "precision", "recall", "f1_macro"))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"accuracy": float(tp.sum() / n), "precision": float(precision.mean()), "recall": float(recall.mean()),
            "f1_macro": float(f1.mean())}


def degradation(metric: str, value: float | None, training: float | None) -> float | None:
    """How much worse ``value`` is than at registration, relative to it (negative: better)."""
    if value is None or training is None:
        return None
    worse = training - value if metric in HIGHER_IS_BETTER else value - training
    return worse / abs(training) if training else worse


def judge(metric: str, value: float | None, low: float | None, high: float | None, training: float | None, *,
          tolerance: float, labels: int, min_labels: int) -> str:
    """'alert' when even the favourable end of the metric's interval is degraded past
    ``tolerance``; 'warning' when the value is degraded past half of it (or past it, for a
    metric without an interval); 'n/a' without a registered value or ``min_labels`` labels."""
    worse = degradation(metric, value, training)
    if worse is None or labels < min_labels:
        return "n/a"
    best = high if metric in HIGHER_IS_BETTER else low
    least = degradation(metric, best, training)
    if least is not None and least > tolerance:
        return "alert"
    return "warning" if worse > tolerance / 2 else "ok"


def probabilities(predictions: Sequence[float | None], scores: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Each row's class probabilities: from ``scores`` (multiclass) or the positive-class ``prediction``."""
    if len(classes) > 2:
        return np.asarray([list(s) for s in scores], dtype=np.float64).reshape(len(scores), len(classes))
    positive = np.asarray(predictions, dtype=np.float64)
    return np.column_stack([1 - positive, positive])


def training_values(training_metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric metrics recorded at registration."""
    return {k: float(v) for k, v in (training_metrics or {}).items() if isinstance(v, (int, float)) and k != "rows"}


def canonical(value: Any) -> str | None:
    """One text form for a class or a label, whatever type carried it: booleans (and the texts
    ``true``/``false``) as ``"True"``/``"False"``; finite numbers, and texts that read as one, as
    the shortest decimal (``1``, ``1.0`` and ``"1.0"`` all give ``"1"``; ``0.5`` gives ``"0.5"``);
    other texts stripped. None (or NaN, or an empty text) is no label."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if number != number:
            return None
        return _number(number) if math.isfinite(number) else str(value)
    text = str(value).strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.capitalize()
    try:
        number = float(text)
    except ValueError:
        return text
    return _number(number) if math.isfinite(number) else text


def canonical_all(values: Sequence[Any]) -> list[str | None]:
    """`canonical` of each value, computed once per distinct value."""
    seen: dict[Any, str | None] = {}
    out = []
    for value in values:
        try:
            text = seen[value]
        except KeyError:
            text = seen[value] = canonical(value)
        except TypeError:  # unhashable (an array): no cache
            text = canonical(value)
        out.append(text)
    return out


def _number(number: float) -> str:
    return str(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)
