"""Expected performance of a model's runs, from the store: estimated from probabilities before
labels arrive (realized performance is `monitor.realized`). The I/O around `monitor.performance`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from monitor import performance
from monitor.alerts import Alert
from monitor.config import MonitorConfig
from store import monitoring, registry


@dataclass
class Evaluation:
    """Performance rows recorded, the alerts they call for, and how the labels matched."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)


def estimated(conn: psycopg.Connection, model_name: str, versions: Mapping[int, registry.ModelVersion],
              config: MonitorConfig) -> Evaluation:
    """Expected performance of each classifier run not estimated yet (its predictions never change)."""
    outcome = Evaluation()
    for run in monitoring.runs_without_estimate(conn, model_name):
        model = versions[run["model_version"]]
        classes = [str(c) for c in model.classes or []]
        if len(classes) < 2:
            continue
        index = {c: i for i, c in enumerate(classes)}
        counts = np.zeros((3, len(classes) + 1))
        for rows in monitoring.run_predictions(conn, run["run_id"]):
            proba = performance.probabilities([r[0] for r in rows], [r[2] for r in rows], classes)
            counts += performance.expected_counts(proba, [index.get(r[1] or "", 0) for r in rows])
        total = int(counts[0, -1])
        if not total:
            continue
        training = performance.training_values(model.training_metrics)
        estimates = [{"model_name": model_name, "model_version": model.version, "scope": "run",
                      "run_id": run["run_id"], "run_role": run["run_role"], "window_start": None, "window_end": None,
                      "metric": metric, "value": value, "training_value": training.get(metric), "estimated": True,
                      "status": performance.status(metric, value, training.get(metric),
                                                   tolerance=config.performance_tolerance, labels=total,
                                                   min_labels=config.min_labels),
                      "labels": 0, "predictions": total, "coverage": None}
                     for metric, value in performance.expected_from_counts(counts).items()]
        monitoring.insert_performance(conn, estimates)
        outcome.rows.extend(estimates)
        degraded = [r for r in estimates if r["status"] == "alert"]
        if degraded and run["run_role"] == "current":
            names = ", ".join(f"{r['metric']} {r['value']:.4g} (at registration {r['training_value']:.4g})"
                              for r in degraded)
            outcome.alerts.append(Alert(model_name, model.version, "estimated_performance", f"run:{run['run_id']}",
                                f"expected performance of run {run['run_id']} (an estimate from its "
                                f"probabilities, before labels) degraded: {names}", run["run_id"],
                                {"estimated": True, "metrics": {r["metric"]: r["value"] for r in degraded}}))
    return outcome
