"""Performance of a model's runs, from the store: realized once labels are matched, expected
(estimated from probabilities) before they arrive. The I/O around `monitor.performance`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import numpy as np
import pandas as pd
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


def realized(conn: psycopg.Connection, model_name: str, versions: Mapping[int, registry.ModelVersion],
             config: MonitorConfig, *, force: bool) -> Evaluation:
    """Recompute realized performance from every label when labels or runs changed since it was
    last computed (or always, with ``force``), replacing what was recorded."""
    changed, last = monitoring.last_change(conn, model_name), monitoring.last_performance(conn, model_name)
    if changed is None or (not force and last is not None and last >= changed):
        return Evaluation()
    matched = pd.DataFrame(monitoring.matched_labels(conn, model_name, window=config.window))
    in_window = monitoring.label_counts(conn, model_name, window=config.window)
    served = matched[matched["run_role"] == "current"] if len(matched) else matched
    labels = {"labels": sum(in_window.values()), "matched": len(served),
              **(served["matched_as"].value_counts().to_dict() if len(served) else {})}
    labels["unmatched"] = labels["labels"] - labels["matched"]
    sizes = monitoring.run_sizes(conn, model_name)
    rows: list[dict[str, Any]] = []
    if len(matched):
        for (run_id, role), group in matched.groupby(["run_id", "run_role"], sort=True):
            version = int(group["model_version"].iloc[0])
            size = sizes.get(int(run_id), 0)
            rows += _performance_rows(group, versions[version], config, scope="run", run_id=int(run_id), role=role,
                                      predictions=size, coverage=len(group) / size if size else None)
        for (start, version, role), group in matched.groupby(["window_start", "model_version", "run_role"],
                                                             sort=True):
            start = start.to_pydatetime()
            rows += _performance_rows(group, versions[int(version)], config, scope="window", role=role, start=start,
                                      end=_window_end(start, config.window),
                                      coverage=len(group) / in_window.get(start, len(group)))
    monitoring.replace_performance(conn, model_name, rows)
    alerts = []
    windows = [r for r in rows if r["scope"] == "window" and r["run_role"] == "current"]
    for (start, version), group in groupby(windows, key=lambda r: (r["window_start"], r["model_version"])):
        degraded = [r for r in group if r["status"] == "alert"]
        if degraded:
            names = ", ".join(f"{r['metric']} {r['value']:.4g} (at registration {r['training_value']:.4g})"
                              for r in degraded)
            alerts.append(Alert(model_name, version, "concept_drift", f"window:{start:%Y-%m-%d}:v{version}",
                                f"performance degraded in the {config.window} of {start:%Y-%m-%d}: {names}, "
                                f"on {degraded[0]['labels']} labels",
                                None, {"window_start": start.isoformat(), "tolerance": config.performance_tolerance,
                                       "metrics": {r["metric"]: r["value"] for r in degraded}}))
    return Evaluation(rows=rows, alerts=alerts, labels=labels)


def _performance_rows(group: pd.DataFrame, model: registry.ModelVersion, config: MonitorConfig, *, scope: str,
                      role: str, run_id: int | None = None, start: datetime | None = None, end: datetime | None = None,
                      predictions: int | None = None, coverage: float | None = None) -> list[dict[str, Any]]:
    if model.task == "regression":
        known = group[group["actual_value"].notna() & group["prediction"].notna()]
        values = performance.regression(known["actual_value"].to_numpy(), known["prediction"].to_numpy())
    else:
        classes = [str(c) for c in model.classes or []]
        known = group
        proba = performance.probabilities(known["prediction"].tolist(), known["scores"].tolist(), classes)
        values = performance.classification(known["actual"].tolist(), known["predicted"].tolist(), proba, classes)
    training = performance.training_values(model.training_metrics)
    return [{"model_name": model.name, "model_version": model.version, "scope": scope, "run_id": run_id,
             "run_role": role, "window_start": start, "window_end": end, "metric": metric, "value": value,
             "training_value": training.get(metric), "estimated": False,
             "status": performance.status(metric, value, training.get(metric), tolerance=config.performance_tolerance,
                                          labels=len(known), min_labels=config.min_labels),
             "labels": len(known), "predictions": predictions, "coverage": coverage}
            for metric, value in values.items()]


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


def _window_end(start: datetime, window: str) -> datetime:
    if window == "day":
        return start + timedelta(days=1)
    if window == "week":
        return start + timedelta(days=7)
    return (start.replace(day=1) + timedelta(days=32)).replace(day=1)
