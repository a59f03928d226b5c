"""Expected performance of a model's runs, from the store: estimated from probabilities before
labels arrive (realized performance is `monitor.realized`). The I/O around `models.performance`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import psycopg

from models import calibration, performance
from monitor.alerts import Alert
from monitor.config import MonitorConfig
from store import performance as perf
from store import registry
from store.performance import PerformanceRow


@dataclass
class Evaluation:
    """Performance rows recorded, the alerts they call for, and how the labels matched."""

    rows: list[PerformanceRow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)


def estimated(conn: psycopg.Connection, model_name: str, versions: Mapping[int, registry.ModelVersion],
              config: MonitorConfig) -> Evaluation:
    """Expected performance of each run not estimated yet (its predictions never change): a
    classifier's from its probabilities, calibrated when its version has a calibration, and a
    calibrated regressor's expected absolute error. A calibrated estimate is compared with the
    same estimate on the validation data, and alerts only when its whole band is past tolerance."""
    outcome = Evaluation()
    fitted = {v: calibration.Calibration.from_json(c) for v, c in perf.calibrations(conn, model_name).items()}
    for run in perf.runs_without_estimate(conn, model_name):
        model = versions[run["model_version"]]
        calib = fitted.get(model.version)
        values = _estimate(conn, run["run_id"], model, calib)
        if values is None:
            continue
        total, metrics = values
        training = calib.reference if calib else performance.training_values(model.training_metrics)
        reference = "validation data (estimated)" if calib else (model.training_metrics or {}).get("evaluated_on")
        estimates = [PerformanceRow(model_name, model.version, "run", run["run_id"], run["run_role"], None, None,
                                    metric, value, training.get(metric), estimated=True,
                                    status=performance.judge(metric, value, low, high, training.get(metric),
                                                             tolerance=config.performance_tolerance, labels=total,
                                                             min_labels=config.min_labels),
                                    labels=0, predictions=total, coverage=None, low=low, high=high,
                                    reference=reference)
                     for metric, (value, low, high) in metrics.items()]
        perf.insert_performance(conn, estimates)
        outcome.rows.extend(estimates)
        degraded = [r for r in estimates if r.status == "alert"]
        if degraded and run["run_role"] == "current":
            names = ", ".join(f"{r.metric} {r.value:.4g} (at registration {r.training_value:.4g})"
                              for r in degraded)
            outcome.alerts.append(Alert(model_name, model.version, "estimated_performance", f"run:{run['run_id']}",
                                f"expected performance of run {run['run_id']} (an estimate from its "
                                f"probabilities, before labels) degraded: {names}", run["run_id"],
                                {"estimated": True, "metrics": {r.metric: r.value for r in degraded}}))
    return outcome


Estimate = dict[str, tuple[float | None, float | None, float | None]]


def _estimate(conn: psycopg.Connection, run_id: int, model: registry.ModelVersion,
              calib: calibration.Calibration | None) -> tuple[int, Estimate] | None:
    """A run's predictions read once: (rows, each metric's (estimate, low, high))."""
    if model.task == "regression":
        if calib is None:
            return None
        predictions = np.concatenate([np.asarray([r[0] for r in rows], dtype=np.float64)
                                      for rows in perf.run_predictions(conn, run_id)] or [np.zeros(0)])
        predictions = predictions[np.isfinite(predictions)]
        return (len(predictions), {"mae": calibration.expected_mae(calib, predictions)}) if len(predictions) else None
    classes = [str(c) for c in model.classes or []]
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    counts, spread = np.zeros((3, len(classes) + 1)), 0.0
    for rows in perf.run_predictions(conn, run_id):
        proba = performance.probabilities([r[0] for r in rows], [r[2] for r in rows], classes)
        if calib is not None:
            proba = calib.probabilities(proba)
        chosen = np.asarray([index.get(r[1] or "", 0) for r in rows])
        counts += performance.expected_counts(proba, chosen)
        right = proba[np.arange(len(chosen)), chosen]
        spread += float((right * (1 - right)).sum())
    total = int(counts[0, -1])
    if not total:
        return None
    metrics: Estimate = {m: (v, None, None) for m, v in performance.expected_from_counts(counts).items()}
    accuracy = metrics["accuracy"][0] or 0.0
    variance = spread / total ** 2 + (accuracy * (1 - accuracy) / calib.rows if calib else 0.0)
    half = calibration.Z95 * variance ** 0.5
    metrics["accuracy"] = (accuracy, max(accuracy - half, 0.0), min(accuracy + half, 1.0))
    return total, metrics
