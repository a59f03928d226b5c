"""Champion against challenger: the same rows, scored by both, compared on the labels that arrived.

Pure statistics (row losses, a paired bootstrap, a verdict) and one function that reads the
paired runs from the store and compares them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from monitor.performance import probabilities
from monitor.stats import psi
from store import challengers, profiles, registry
from store.db import connect
from store.errors import NotFound
from store.migrate import prepare
from store.settings import Settings

#: Rows above which the bootstrap resamples random blocks of rows instead of single rows.
BLOCK_BOOTSTRAP_ROWS = 20_000
BLOCKS = 2_000
LOG_LOSS_FLOOR = 1e-15


def row_losses(task: str, predictions: Sequence[float | None], scores: Sequence[Any],
               actual_text: Sequence[str | None], actual_value: Sequence[float | None],
               classes: Sequence[str]) -> np.ndarray:
    """Each row's loss: absolute error (regression) or log loss of the true class (classification)."""
    if task == "regression":
        return np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(actual_value, dtype=np.float64))
    proba = probabilities(predictions, scores, classes)
    column = {c: i for i, c in enumerate(classes)}
    index = np.array([column.get(str(a), -1) for a in actual_text])
    p_true = np.where(index >= 0, proba[np.arange(len(index)), np.maximum(index, 0)], 0.0)
    return -np.log(np.clip(p_true, LOG_LOSS_FLOOR, 1.0))


def paired_bootstrap(diff: np.ndarray, *, confidence: float, iterations: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``diff`` and its bootstrap confidence interval (percentile method).

    Large samples are cut into random blocks whose sums are resampled, which keeps the cost
    independent of the number of rows.
    """
    n = len(diff)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if n <= BLOCK_BOOTSTRAP_ROWS:
        means = np.concatenate([diff[rng.integers(0, n, size=(100, n))].mean(axis=1)
                                for _ in range(iterations // 100)])
    else:
        block = rng.integers(0, BLOCKS, size=n)
        sums = np.bincount(block, weights=diff, minlength=BLOCKS)
        sizes = np.bincount(block, minlength=BLOCKS)
        picks = rng.integers(0, BLOCKS, size=(iterations, BLOCKS))
        means = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


def verdict(low: float, high: float) -> str:
    """From the interval of (challenger loss - current loss)."""
    if np.isnan(low) or np.isnan(high):
        return "not yet distinguishable (no labels)"
    if high < 0:
        return "challenger better"
    if low > 0:
        return "challenger worse"
    return "not yet distinguishable"


def compare_models(settings: Settings, model_name: str, *, since: datetime | None = None,
                   confidence: float = 0.95) -> dict[str, Any]:
    """Compare the current version of ``model_name`` with its challenger on their paired runs."""
    with connect(prepare(settings), autocommit=True, application_name="predstore-compare") as conn:
        current = registry.get_model(conn, model_name)
        try:
            challenger = registry.get_model(conn, model_name, alias="challenger")
        except NotFound:
            raise NotFound(f"model {model_name!r} has no challenger; set one with "
                           f"`predstore models promote {model_name} VERSION --as challenger`") from None
        pairs = [p for p in challengers.paired_runs(conn, model_name, since=since)
                 if p["current_version"] == current.version and p["challenger_version"] == challenger.version]
        rows = [row for p in pairs for row in challengers.side_by_side(conn, model_name, p["current_run"],
                                                                        p["challenger_run"])]
        drift = {"current": _output_psi(conn, model_name, current.version, [p["current_run"] for p in pairs]),
                 "challenger": _output_psi(conn, model_name, challenger.version,
                                           [p["challenger_run"] for p in pairs])}
    return _compare(current, challenger, pairs, rows, drift, confidence)


def _compare(current: registry.ModelVersion, challenger: registry.ModelVersion, pairs: list[dict[str, Any]],
             rows: list[tuple[Any, ...]], drift: dict[str, float | None], confidence: float) -> dict[str, Any]:
    task = current.task
    classes = [str(c) for c in (current.classes or [])]
    columns = list(zip(*rows, strict=True)) if rows else [()] * 9
    _, cur_pred, cur_label, cur_scores, ch_pred, ch_label, ch_scores, actual_text, actual_value = columns
    labeled = np.array([v is not None if task == "regression" else t is not None
                        for t, v in zip(actual_text, actual_value, strict=True)], dtype=bool)
    result: dict[str, Any] = {
        "model": current.name, "current_version": current.version, "challenger_version": challenger.version,
        "paired_runs": len(pairs), "rows": len(rows), "labeled_rows": int(labeled.sum()),
        "metric": "mean absolute error" if task == "regression" else "log loss", "confidence": confidence,
    }
    if rows:
        a, b = np.asarray(cur_pred, dtype=np.float64), np.asarray(ch_pred, dtype=np.float64)
        result["disagreement"] = {"mean_abs_prediction_difference": float(np.mean(np.abs(a - b)))}
        if task == "classification":
            result["disagreement"]["flipped_labels_share"] = float(np.mean(np.asarray(cur_label) !=
                                                                           np.asarray(ch_label)))
    result["output_psi_vs_baseline"] = drift
    mean = low = high = float("nan")
    if labeled.any():
        pick = np.flatnonzero(labeled).tolist()

        def losses(pred: Sequence[Any], scores: Sequence[Any]) -> np.ndarray:
            return row_losses(task, [pred[i] for i in pick], [scores[i] for i in pick],
                              [actual_text[i] for i in pick], [actual_value[i] for i in pick], classes)

        current_loss, challenger_loss = losses(cur_pred, cur_scores), losses(ch_pred, ch_scores)
        mean, low, high = paired_bootstrap(challenger_loss - current_loss, confidence=confidence)
        result["current_metric"] = float(current_loss.mean())
        result["challenger_metric"] = float(challenger_loss.mean())
    result.update(difference=None if np.isnan(mean) else mean,
                  interval=None if np.isnan(low) else [low, high], verdict=verdict(low, high))
    return result


def _output_psi(conn: Any, model_name: str, version: int, run_ids: list[int]) -> float | None:
    if not run_ids:
        return None
    base = {b["column_name"]: b for b in profiles.get_baseline(conn, model_name, version)}
    summed = profiles.get_run_profiles(conn, run_ids)
    if "__prediction__" not in base or "__prediction__" not in summed:
        return None
    return psi(base["__prediction__"]["counts"], summed["__prediction__"]["counts"])


def render(comparison: dict[str, Any]) -> str:
    """The comparison as one self-contained HTML page."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in comparison.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>predstore: {html.escape(comparison['model'])}"
            " champion vs challenger</title><style>body{font-family:sans-serif;margin:2em}th{text-align:left;"
            "padding-right:1em}td,th{border-bottom:1px solid #ddd;padding:4px}</style></head><body>"
            f"<h1>{html.escape(comparison['model'])}: v{comparison['current_version']} (current) against "
            f"v{comparison['challenger_version']} (challenger)</h1><p><b>{html.escape(comparison['verdict'])}</b></p>"
            f"<table>{rows}</table></body></html>")
