"""Drift statistics over histograms: a baseline's bins against the counts of a run or window.

Pure functions, no I/O. Inputs are the dicts of `batch.profile` (a baseline column: ``kind``,
``edges`` or ``categories``, ``counts``, ``null_count``, ``n``, ``mean``, ``std``; a profile:
``counts``, ``null_count``, ``n``, ``min``, ``max``, ``unseen``). Missing values are kept out of the
distributions and measured apart (null-rate change).

How positions are taken where a metric needs them (Wasserstein): each inner bin sits at its
midpoint; the underflow bin at the batch's observed minimum and the overflow bin at its observed
maximum (or at the outer edge when nothing fell outside). KS compares the cumulative shares at the
bin edges, so it never exceeds the KS statistic of the raw values.

A feature *drifts* when one of its distance metrics reaches its alert threshold **and** the
difference is significant at ``alpha`` (KS test for numbers, chi-square for categories): the
effect size keeps tiny differences in huge batches from alerting, and the test keeps sampling
noise in small batches from alerting, so on data with no drift the false-alarm rate is at most
``alpha``. A rise in missing values (significant, past its threshold) or categories the model never
saw (past its threshold) also make it drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

#: Share given to an empty bin in PSI, so that a bin empty on one side gives a finite value.
PSI_FLOOR = 1e-4

#: Default (warning, alert) thresholds per metric; every one can be set per feature.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "psi": (0.1, 0.25),
    "jensen_shannon": (0.05, 0.1),
    "wasserstein": (0.05, 0.1),
    "ks": (0.05, 0.1),
    "cramers_v": (0.1, 0.2),
    "null_rate_change": (0.05, 0.1),
    "unseen_share": (0.01, 0.05),
}
#: The distance metrics whose alert (with a significant test) makes a feature drift. Not
#: Jensen-Shannon for categories: it jumps when a rare category is merely absent from a small
#: batch (a 4% category missing from a week gives 0.14), which PSI and Cramér's V weigh sensibly.
DECISIVE = {"numeric": ("psi", "jensen_shannon", "wasserstein", "ks"),
            "categorical": ("psi", "cramers_v")}
#: The metric holding a feature's verdict: value 1 if it drifted, else 0.
VERDICT = "drift"


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and levels of the drift verdicts."""

    thresholds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    #: Per-feature overrides: {feature: {metric: (warning, alert)}}.
    features: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    #: Significance level of the tests: the false-alarm rate per feature when nothing drifted.
    alpha: float = 0.01
    #: Share of drifted features from which the whole dataset counts as drifted.
    drift_share: float = 0.5

    def limits(self, column: str, metric: str) -> tuple[float, float] | None:
        """The (warning, alert) thresholds of ``metric`` for ``column``, or None for none."""
        own = self.features.get(column, {})
        return own.get(metric) or self.thresholds.get(metric) or DEFAULT_THRESHOLDS.get(metric)


@dataclass(frozen=True)
class Result:
    """One metric of one column."""

    column_name: str
    role: str
    kind: str
    metric: str
    value: float | None
    warning: float | None
    alert: float | None
    status: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftCheck:
    """Every metric of every column, and the verdicts."""

    results: list[Result]
    rows: int
    features: int
    drifted: list[str]
    outputs_drifted: list[str]

    @property
    def drift_share(self) -> float | None:
        return len(self.drifted) / self.features if self.features else None

    def dataset_drift(self, config: DriftConfig) -> bool:
        share = self.drift_share
        return bool(self.drifted) and share is not None and share >= config.drift_share


# --- the metrics, each on plain arrays -------------------------------------------------------


def psi(base_counts: Sequence[float], counts: Sequence[float]) -> float:
    """Population stability index, sum((q - p) ln(q / p)), empty bins floored at `PSI_FLOOR`."""
    p, q = _shares(base_counts), _shares(counts)
    p, q = np.where(p == 0, PSI_FLOOR, p), np.where(q == 0, PSI_FLOOR, q)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(base_counts: Sequence[float], counts: Sequence[float]) -> float:
    """Jensen-Shannon distance in base 2 (0 identical, 1 disjoint)."""
    return float(jensenshannon(_shares(base_counts), _shares(counts), base=2))


def wasserstein(positions: Sequence[float] | np.ndarray, base_counts: Sequence[float], counts: Sequence[float],
                scale: float) -> float:
    """Earth mover's distance between the two binned distributions, divided by ``scale``."""
    return float(stats.wasserstein_distance(positions, positions, base_counts, counts)) / scale


def ks(base_counts: Sequence[float], counts: Sequence[float]) -> float:
    """Kolmogorov-Smirnov statistic: the largest gap between the binned cumulative shares."""
    return float(np.max(np.abs(np.cumsum(_shares(base_counts)) - np.cumsum(_shares(counts)))))


def ks_p_value(statistic: float, n_base: int, n: int) -> float:
    """Two-sample KS p-value, Smirnov's asymptotic form (as `scipy.stats.ks_2samp` method='asymp')."""
    m, k = sorted([float(n_base), float(n)], reverse=True)
    return float(stats.kstwo.sf(statistic, np.round(m * k / (m + k))))


def chi_square(base_counts: Sequence[float], counts: Sequence[float]) -> tuple[float, float, float]:
    """Chi-square test of homogeneity of the two rows of counts: (statistic, p-value, Cramér's V).

    Bins empty on both sides are left out; fewer than two bins left means nothing to test (0, 1, 0).
    """
    table = np.vstack([np.asarray(base_counts, dtype=np.float64), np.asarray(counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    result = stats.chi2_contingency(table, correction=False)
    statistic = float(result.statistic)
    return statistic, float(result.pvalue), math.sqrt(statistic / table.sum())


def positions(edges: Sequence[float], low: float | None, high: float | None) -> np.ndarray:
    """Where each numeric bin sits: midpoints inside, observed extremes for under- and overflow."""
    e = np.asarray(edges, dtype=np.float64)
    under = min(low, e[0]) if low is not None else e[0]
    over = max(high, e[-1]) if high is not None else e[-1]
    return np.concatenate([[under], (e[:-1] + e[1:]) / 2, [over]])


def scale_of(base: Mapping[str, Any]) -> float:
    """What Wasserstein is divided by: the baseline's std; for a constant column |mean|, else 1."""
    std, mean = base.get("std"), base.get("mean")
    if std:
        return float(std)
    return abs(float(mean)) if mean else 1.0


# --- one column, one check -------------------------------------------------------------------


def compare_column(base: Mapping[str, Any], profile: Mapping[str, Any] | None,
                   config: DriftConfig) -> list[Result]:
    """Every metric of one column, and its verdict (the `VERDICT` metric), as `Result` rows."""
    name, kind, role = base["column_name"], base["kind"], base["role"]
    profile = profile or _empty(len(base["counts"]))
    values: dict[str, float | None] = {}
    p_value: float | None = None
    p_counts, q_counts = base["counts"], profile["counts"]
    n_base, n = int(sum(p_counts)), int(sum(q_counts))
    if n_base and n:
        values["psi"] = psi(p_counts, q_counts)
        values["jensen_shannon"] = jensen_shannon(p_counts, q_counts)
        if kind == "numeric":
            values["wasserstein"] = wasserstein(positions(base["edges"], profile["min"], profile["max"]),
                                                p_counts, q_counts, scale_of(base))
            statistic = ks(p_counts, q_counts)
            values["ks"] = statistic
            values["ks_p_value"] = p_value = ks_p_value(statistic, n_base, n)
        else:
            values["chi2"], values["chi2_p_value"], values["cramers_v"] = chi_square(p_counts, q_counts)
            p_value = values["chi2_p_value"]
    else:  # one side has no values: nothing to compare but the missing values
        values.update(dict.fromkeys(("psi", "jensen_shannon", *DECISIVE[kind]), None))
    base_total, total = n_base + int(base["null_count"]), n + int(profile["null_count"])
    null_p: float | None = None
    if base_total and total:
        values["null_rate_change"] = profile["null_count"] / total - base["null_count"] / base_total
        null_p = chi_square([base["null_count"], n_base], [profile["null_count"], n])[1]
        values["null_p_value"] = null_p
    else:
        values["null_rate_change"] = None
    if kind == "categorical":
        values["unseen_share"] = profile.get("unseen", 0) / n if n else None

    results = [_result(name, role, kind, metric, value, config) for metric, value in values.items()]
    status = {r.metric: r.status for r in results}
    distribution = any(status.get(m) == "alert" for m in DECISIVE[kind]) and p_value is not None \
        and p_value < config.alpha
    missing = status.get("null_rate_change") == "alert" and null_p is not None and null_p < config.alpha
    unseen = status.get("unseen_share") == "alert"
    drifted = distribution or missing or unseen
    if drifted:
        verdict = "alert"
    elif any(s in ("warning", "alert") for s in status.values()):
        verdict = "warning"
    elif all(v is None for v in values.values()):
        verdict = "n/a"
    else:
        verdict = "ok"
    results.append(Result(name, role, kind, VERDICT, 1.0 if drifted else 0.0, None, None, verdict))
    return results


def check(baseline: Sequence[Mapping[str, Any]], profile: Mapping[str, Mapping[str, Any]],
          config: DriftConfig) -> DriftCheck:
    """Compare a summed profile with its model version's baseline, column by column."""
    results: list[Result] = []
    drifted: list[str] = []
    outputs_drifted: list[str] = []
    features = rows = 0
    for base in baseline:
        name = base["column_name"]
        if base["role"] == "output" and name not in profile:
            continue  # e.g. a profile of input data alone, with no predictions
        column = compare_column(base, profile.get(name), config)
        results.extend(column)
        verdict = column[-1]
        if base["role"] == "feature":
            features += verdict.status != "n/a"
            seen = profile.get(name)
            rows = max(rows, int(seen["n"] + seen["null_count"]) if seen else 0)
        if verdict.status == "alert":
            (drifted if base["role"] == "feature" else outputs_drifted).append(name)
    return DriftCheck(results=results, rows=rows, features=features, drifted=drifted,
                      outputs_drifted=outputs_drifted)


def status_of(value: float | None, limits: tuple[float, float] | None) -> str:
    """'alert', 'warning' or 'ok' by the magnitude of ``value``; 'n/a' when it is undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if limits is None:
        return "ok"
    warning, alert = limits
    return "alert" if abs(value) >= alert else "warning" if abs(value) >= warning else "ok"


def _result(name: str, role: str, kind: str, metric: str, value: float | None, config: DriftConfig) -> Result:
    limits = config.limits(name, metric)
    clean = None if value is None or not math.isfinite(value) else float(value)
    return Result(name, role, kind, metric, clean, limits[0] if limits else None, limits[1] if limits else None,
                  status_of(clean, limits))


def _shares(counts: Sequence[float]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum()


def _empty(bins: int) -> dict[str, Any]:
    return {"counts": [0] * bins, "null_count": 0, "n": 0, "min": None, "max": None, "unseen": 0}
