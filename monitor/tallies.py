"""Sufficient statistics of realized performance: vectors of sums that add up.

A run's (or a window's) metrics are a function of a few sums over its matched labels: confusion
counts, loss sums and per-class score histograms (for ROC AUC) for a classifier; error sums for a
regressor. Tallies of new labels are added to the stored ones, and a corrected label's old tally
is subtracted, so realized performance never reads the labels it already counted. Each metric
comes with a normal-approximation interval where one is cheap (accuracy, MAE, log loss, Brier
score). Pure functions over arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.performance import LOG_LOSS_FLOOR, canonical_all

#: Score histogram bins per class (ROC AUC from binned scores: ties within a bin count half).
BINS = 200
#: What the output says of a ROC AUC read from the tallies (`benchmarks/bench_auc_bins.py` measured it).
BINNED_AUC = (f"roc_auc is read from {BINS}-bin score histograms: within 0.0001 of the exact figure when "
              "scores spread over 0-1, off by up to 0.02 when most pile up below 0.05 (a rare event)")
#: Regression tally: count, sum |e|, sum e^2 (twice: for MAE's variance and RMSE), sums of y and y^2,
#: count of non-zero y, sum |e|/|y| over them.
REGRESSION_FIELDS = ("n", "abs", "abs_sq", "sq", "y", "y_sq", "nonzero", "ape")
Z95 = 1.959963984540054


def size(task: str, classes: int) -> int:
    """Length of a tally vector."""
    if task == "regression":
        return len(REGRESSION_FIELDS)
    return 2 + (classes + 1) * classes + 4 + 2 * classes * BINS


def regression(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The tally of regression rows (rows with a missing value are left out)."""
    y, yhat = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, error = y[ok], np.abs(yhat[ok] - y[ok])
    nonzero = y != 0
    return np.array([len(y), error.sum(), (error ** 2).sum(), (error ** 2).sum(), y.sum(), (y ** 2).sum(),
                     nonzero.sum(), (error[nonzero] / np.abs(y[nonzero])).sum()])


def classification(actual: Sequence[str | None], predicted: Sequence[str | None], proba: np.ndarray,
                   classes: Sequence[str]) -> np.ndarray:
    """The tally of classification rows: count, count with a label among ``classes``, the
    confusion counts (actual x predicted; a last row for labels that are no class), log loss and
    Brier sums and sums of squares, and per class the histograms of its probability among rows of
    that class and of the others. Everything is compared in `canonical` form."""
    k = len(classes)
    index = {c: i for i, c in enumerate(canonical_all(classes))}
    y = np.array([index.get(a, k) if a is not None else k for a in canonical_all(actual)], dtype=np.int64)
    yhat = np.array([index.get(p, -1) if p is not None else -1 for p in canonical_all(predicted)], dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64).reshape(len(y), k)
    matrix = np.zeros((k + 1, k))
    scored = yhat >= 0
    np.add.at(matrix, (y[scored], yhat[scored]), 1)
    known = y < k
    onehot = np.zeros((int(known.sum()), k))
    onehot[np.arange(len(onehot)), y[known]] = 1
    p_known = p[known]
    loss = -np.log(np.clip(p_known[np.arange(len(onehot)), y[known]], LOG_LOSS_FLOOR, 1.0))
    brier = ((onehot - p_known) ** 2).sum(axis=1) if k > 2 else (onehot[:, 1] - p_known[:, 1]) ** 2
    bins = np.clip((p_known * BINS).astype(np.int64), 0, BINS - 1)
    hist = np.zeros((k, 2, BINS))
    for c in range(k):
        positive = onehot[:, c] == 1
        hist[c, 0] = np.bincount(bins[positive, c], minlength=BINS)
        hist[c, 1] = np.bincount(bins[~positive, c], minlength=BINS)
    return np.concatenate([[len(y), known.sum()], matrix.ravel(),
                           [loss.sum(), (loss ** 2).sum(), brier.sum(), (brier ** 2).sum()], hist.ravel()])


def confusion(classes: int, tally: np.ndarray) -> np.ndarray:
    """A classification tally's counts, actual (a last row for labels that are no class) x predicted."""
    return np.asarray(tally[2:2 + (classes + 1) * classes]).reshape(classes + 1, classes)


def score_histograms(classes: int, tally: np.ndarray) -> np.ndarray:
    """A classification tally's histograms: ``[c, 0]`` of class c's probability among the rows of
    class c, ``[c, 1]`` among the others."""
    return np.asarray(tally[6 + (classes + 1) * classes:]).reshape(classes, 2, BINS)


Metrics = dict[str, tuple[float | None, float | None, float | None]]


def metrics(task: str, classes: int, tally: np.ndarray) -> Metrics:
    """Each metric as (value, low, high): the 95% interval where there is a cheap one, else
    (value, None, None). ``classes`` is the number of classes (ignored for regression)."""
    values = _regression_metrics(tally) if task == "regression" else _classification_metrics(classes, tally)
    return {name: tuple(None if v is None else float(v) for v in triple)  # type: ignore[misc]
            for name, triple in values.items()}


def _regression_metrics(tally: np.ndarray) -> Metrics:
    n, abs_sum, abs_sq, sq, y, y_sq, nonzero, ape = tally
    if not n:
        return dict.fromkeys(("mae", "rmse", "r2", "mape"), (None, None, None))
    mae = abs_sum / n
    half = Z95 * math.sqrt(max(abs_sq / n - mae * mae, 0.0) / n)
    spread = y_sq - y * y / n
    return {"mae": (mae, mae - half, mae + half), "rmse": (math.sqrt(sq / n), None, None),
            "r2": (1 - sq / spread if n > 1 and spread > 1e-12 * max(y_sq, 1.0) else None, None, None),
            "mape": (ape / nonzero if nonzero else None, None, None)}


def _classification_metrics(k: int, tally: np.ndarray) -> Metrics:
    n, n_known = tally[0], tally[1]
    confusion_counts = confusion(k, tally)
    loss, loss_sq, brier, brier_sq = tally[2 + (k + 1) * k:6 + (k + 1) * k]
    hist = score_histograms(k, tally)
    names = ("accuracy", "precision", "recall", "f1_macro", "roc_auc", "log_loss", "brier")
    if not n:
        return dict.fromkeys(names, (None, None, None))
    tp = np.diag(confusion_counts[:k])
    predicted, actual = confusion_counts.sum(axis=0), confusion_counts[:k].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    accuracy = float(tp.sum() / n)
    half = Z95 * math.sqrt(accuracy * (1 - accuracy) / n)
    out: Metrics = {"accuracy": (accuracy, max(accuracy - half, 0.0), min(accuracy + half, 1.0)),
                    "precision": (float(precision.mean()), None, None), "recall": (float(recall.mean()), None, None),
                    "f1_macro": (float(f1.mean()), None, None)}
    if k >= 2 and (actual > 0).all():
        aucs = [_auc(hist[c, 0], hist[c, 1]) for c in ((1,) if k == 2 else range(k))]
        out["roc_auc"] = (float(np.mean(aucs)), None, None)
    else:
        out["roc_auc"] = (None, None, None)  # undefined unless every class occurs
    for name, total, squares in (("log_loss", loss, loss_sq), ("brier", brier, brier_sq)):
        if n_known:
            mean = total / n_known
            spread = Z95 * math.sqrt(max(squares / n_known - mean * mean, 0.0) / n_known)
            out[name] = (mean, mean - spread, mean + spread)
        else:
            out[name] = (None, None, None)
    return out


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties (the same bin) counted half."""
    below = np.cumsum(negative) - negative
    return float((positive * (below + negative / 2)).sum() / (positive.sum() * negative.sum()))
