"""Drift statistics over histograms: a baseline's bins against the counts of a run or window.

Pure functions, no I/O. Inputs are the dicts of `models.profile` (a baseline column: ``kind``,
``edges`` or ``categories``, ``counts``, ``sums``, ``null_count``, ``n``, ``mean``, ``std``,
``source``; a profile: ``counts``, ``sums``, ``null_count``, ``n``, ``min``, ``max``, ``unseen``).
Missing values are kept out of the distributions and tested apart (null rate).

**When a column drifts.** Each column gets one p-value: the smaller of its distribution test's
(two-sample Kolmogorov-Smirnov on the binned cumulative shares for numbers, which is conservative;
chi-square of homogeneity for categories, with sparse cells merged until every expected count is
at least 5) and its null-rate test's (Fisher's exact test), doubled (Bonferroni), so that a column
has one share of the error budget however many ways it is tested. The p-values of every feature
and output of a check are corrected together (Holm by default, Benjamini-Hochberg as an option).
A column *drifts* when its corrected p-value is below ``alpha`` **and** one of its effects is past
its alert threshold; it is a *warning* when the corrected p-value is below ``warning_alpha`` and an
effect is past its warning threshold. The effect of a distance is its value minus its noise floor:
its mean over multinomial draws of the batch's row count from the baseline's bins, so a distance
that sampling noise alone inflates at small batches does not read as an effect.

The guarantee: when a batch's rows come from the distribution of the baseline's rows, independently,
a check flags any column as drifted with probability at most ``alpha`` (Holm controls the
family-wise error under any dependence between columns; Benjamini-Hochberg controls the expected
share of false discoveries instead, at ``alpha``, under independence or positive dependence).
Categories the model never saw (``unseen_share`` past its alert threshold) also make a column
drift; that rule has no test behind it and is outside the guarantee.

Positions (Wasserstein): each side's mass sits at that side's mean within each bin, from the
per-bin sums; a baseline recorded without them has no Wasserstein, and the check says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from monitor.distances import (
    MIN_EXPECTED,
    PSI_FLOOR,
    Counts,
    adjust,
    chi_square,
    cohens_w,
    jensen_shannon,
    ks,
    ks_p_value,
    merge_sparse,
    null_test,
    psi,
    wasserstein,
)

#: The distances and tests are `monitor.distances`'; they are named here too, as the statistics' surface.
__all__ = ["CORRECTIONS", "DECISIVE", "DEFAULT_THRESHOLDS", "MIN_EXPECTED", "PSI_FLOOR", "SIMULATED", "VERDICT",
           "Counts", "DriftCheck", "DriftConfig", "Result", "adjust", "baseline_notes", "bin_positions", "check",
           "chi_square", "cohens_w", "compare_column", "jensen_shannon", "ks", "ks_p_value", "merge_sparse",
           "noise_floors", "null_test", "psi", "scale_of", "status_of", "wasserstein"]

#: Default (warning, alert) thresholds per metric; every one can be set per feature. Distances
#: are judged by their effect (value minus noise floor). ``cramers_v`` is kept for what it was,
#: but it grows with the batch size; Cohen's w is the n-independent effect for categories.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "psi": (0.1, 0.25),
    "jensen_shannon": (0.05, 0.1),
    "wasserstein": (0.05, 0.1),
    "ks": (0.05, 0.1),
    "cohens_w": (0.1, 0.3),
    "cramers_v": (0.1, 0.2),
    "null_rate_change": (0.05, 0.1),
    "unseen_share": (0.01, 0.05),
}
#: The distances whose effect can make a column drift (with its test). Not Jensen-Shannon for
#: categories: it jumps when a rare category is merely absent from a small batch.
DECISIVE = {"numeric": ("psi", "jensen_shannon", "wasserstein", "ks"), "categorical": ("psi", "cohens_w")}
#: The metrics given a noise floor (simulated at the batch's row count).
SIMULATED = ("psi", "jensen_shannon", "wasserstein", "ks", "cohens_w")
#: The metric holding a column's verdict: value 1 if it drifted, else 0.
VERDICT = "drift"
CORRECTIONS = ("holm", "bh")


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and levels of the drift verdicts."""

    thresholds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    #: Per-feature overrides: {feature: {metric: (warning, alert)}}.
    features: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    #: Level of the corrected tests: the chance that a check flags anything when nothing drifted.
    alpha: float = 0.01
    #: The looser level of a warning.
    warning_alpha: float = 0.1
    #: 'holm' (family-wise error) or 'bh' (Benjamini-Hochberg, false discovery rate).
    correction: str = "holm"
    #: Share of drifted features from which the whole dataset counts as drifted.
    drift_share: float = 0.5
    #: Multinomial draws per column for the noise floors.
    simulations: int = 200
    #: Alert on outputs whose baseline is in-sample (the model's own training rows); else warn.
    in_sample_output_alerts: bool = False
    seed: int = 0

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
    """Every metric of every column, the verdicts, and what could not be computed."""

    results: list[Result]
    rows: int
    features: int
    drifted: list[str]
    outputs_drifted: list[str]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drift_share(self) -> float | None:
        return len(self.drifted) / self.features if self.features else None

    def dataset_drift(self, config: DriftConfig) -> bool:
        share = self.drift_share
        return bool(self.drifted) and share is not None and share >= config.drift_share


# --- noise floors and positions ------------------------------------------------------------


def noise_floors(base: Mapping[str, Any], n: int, config: DriftConfig,
                 base_positions: np.ndarray | None) -> dict[str, float]:
    """Mean of each distance over `DriftConfig.simulations` no-drift batches of ``n`` rows drawn
    from the baseline's bins (its multinomial): what sampling noise alone reads at this size."""
    counts = np.asarray(base["counts"], dtype=np.float64)
    rng = np.random.default_rng([config.seed, n, len(counts)])
    draws = rng.multinomial(n, counts / counts.sum(), size=config.simulations).astype(np.float64)
    floors = {"psi": psi(counts, draws), "jensen_shannon": jensen_shannon(counts, draws)}
    if base["kind"] == "numeric":
        floors["ks"] = ks(counts, draws)
        if base_positions is not None:
            gaps = np.diff(base_positions)
            cdf = np.abs(np.cumsum(counts / counts.sum()) - np.cumsum(draws / n, axis=1))[:, :-1]
            floors["wasserstein"] = cdf @ gaps / scale_of(base)
    else:
        floors["cohens_w"] = cohens_w(counts, draws)
    return {metric: float(np.mean(values)) for metric, values in floors.items()}


def bin_positions(counts: Sequence[float], sums: Sequence[float] | None, edges: Sequence[float]) -> np.ndarray | None:
    """Where each numeric bin's mass sits: the mean of its values (sum / count); an empty bin at
    its middle (or outer edge). None without per-bin sums."""
    if sums is None or not edges:
        return None
    e = np.asarray(edges, dtype=np.float64)
    middle = np.concatenate([[e[0]], (e[:-1] + e[1:]) / 2, [e[-1]]])
    c, s = np.asarray(counts, dtype=np.float64), np.asarray(sums, dtype=np.float64)
    return np.where(c > 0, s / np.where(c > 0, c, 1), middle)


def scale_of(base: Mapping[str, Any]) -> float:
    """What Wasserstein is divided by: the baseline's std; for a constant column |mean|, else 1."""
    std, mean = base.get("std"), base.get("mean")
    if std:
        return float(std)
    return abs(float(mean)) if mean else 1.0


# --- one column, then one check --------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """One column's metrics before the correction: its p-value and which effects passed."""

    base: Mapping[str, Any]
    results: list[Result]
    p_value: float | None
    alert: bool
    warning: bool
    unseen: bool


def compare_column(base: Mapping[str, Any], profile: Mapping[str, Any] | None,
                   config: DriftConfig) -> list[Result]:
    """Every metric of one column and its verdict, tested alone (no correction across columns)."""
    return _verdicts([_measure(base, profile, config)], config)[0]


def _measure(base: Mapping[str, Any], profile: Mapping[str, Any] | None, config: DriftConfig) -> _Column:
    name, kind, role = base["column_name"], base["kind"], base["role"]
    profile = profile or _empty(len(base["counts"]))
    values: dict[str, float | None] = {}
    floors: dict[str, float] = {}
    p_counts, q_counts = base["counts"], profile["counts"]
    n_base, n = int(sum(p_counts)), int(sum(q_counts))
    p_dist: float | None = None
    if n_base and n:
        values["psi"] = float(psi(p_counts, q_counts))
        values["jensen_shannon"] = float(jensen_shannon(p_counts, q_counts))
        if kind == "numeric":
            edges = base["edges"]
            base_at = bin_positions(p_counts, base.get("sums"), edges)
            batch_at = bin_positions(q_counts, profile.get("sums"), edges)
            values["wasserstein"] = None if base_at is None or batch_at is None else \
                wasserstein(base_at, p_counts, batch_at, q_counts, scale_of(base))
            statistic = float(ks(p_counts, q_counts))
            values["ks"] = statistic
            values["ks_p_value"] = p_dist = ks_p_value(statistic, n_base, n)
        else:
            base_at = None
            values["chi2"], values["chi2_p_value"], values["cramers_v"] = chi_square(p_counts, q_counts)
            values["cohens_w"] = float(cohens_w(p_counts, q_counts))
            p_dist = values["chi2_p_value"]
        floors = noise_floors(base, n, config, base_at)
    else:  # one side has no values: nothing to compare but the missing values
        values.update(dict.fromkeys(("psi", "jensen_shannon", *DECISIVE[kind]), None))
    base_total, total = n_base + int(base["null_count"]), n + int(profile["null_count"])
    p_null: float | None = None
    if base_total and total:
        values["null_rate_change"] = profile["null_count"] / total - base["null_count"] / base_total
        values["null_p_value"] = p_null = null_test(int(base["null_count"]), base_total, int(profile["null_count"]),
                                                    total)
    else:
        values["null_rate_change"] = None
    if kind == "categorical":
        values["unseen_share"] = profile.get("unseen", 0) / n if n else None

    effects = {m: (None if v is None else max(v - floors.get(m, 0.0), 0.0) if m in floors else v)
               for m, v in values.items()}
    results = [_result(name, role, kind, metric, value, effects[metric], config) for metric, value in values.items()]
    results += [Result(name, role, kind, f"{metric}_noise_floor", floor, None, None, "ok")
                for metric, floor in floors.items()]
    tested = [p for p in (p_dist, p_null) if p is not None]
    p_value = min(1.0, len(tested) * min(tested)) if tested else None
    status = {r.metric: r.status for r in results}
    effect_metrics = (*DECISIVE[kind], "null_rate_change")
    return _Column(base=base, results=results, p_value=p_value,
                   alert=any(status.get(m) == "alert" for m in effect_metrics),
                   warning=any(status.get(m) in ("warning", "alert") for m in effect_metrics),
                   unseen=status.get("unseen_share") == "alert")


def _verdicts(columns: list[_Column], config: DriftConfig) -> list[list[Result]]:
    """Correct the columns' p-values together and give each column its verdict row."""
    tested = [(id(c), c.p_value) for c in columns if c.p_value is not None]
    adjusted = dict(zip([i for i, _ in tested], adjust([p for _, p in tested], config.correction), strict=True))
    out = []
    for column in columns:
        base = column.base
        name, role, kind = base["column_name"], base["role"], base["kind"]
        p = adjusted.get(id(column))
        drifted = (p is not None and p < config.alpha and column.alert) or column.unseen
        warned = p is not None and p < config.warning_alpha and column.warning
        verdict = "alert" if drifted else "warning" if warned else \
            "n/a" if all(r.value is None for r in column.results) else "ok"
        rows = [*column.results, Result(name, role, kind, "p_value", column.p_value, None, None, "ok"),
                Result(name, role, kind, "p_adjusted", None if p is None else float(p), config.warning_alpha,
                       config.alpha, "ok")]
        out.append([*rows, Result(name, role, kind, VERDICT, 1.0 if drifted else 0.0, None, None, verdict)])
    return out


def check(baseline: Sequence[Mapping[str, Any]], profile: Mapping[str, Mapping[str, Any]],
          config: DriftConfig) -> DriftCheck:
    """Compare a summed profile with its model version's baseline, every column corrected together."""
    measured = [_measure(base, profile.get(base["column_name"]), config) for base in baseline
                if not (base["role"] == "output" and base["column_name"] not in profile)]  # e.g. input data alone
    results: list[Result] = []
    drifted: list[str] = []
    outputs_drifted: list[str] = []
    warnings: list[str] = []
    features = rows = 0
    for column, rows_of in zip(measured, _verdicts(measured, config), strict=True):
        base = column.base
        name, role = base["column_name"], base["role"]
        verdict = rows_of[-1]
        if _in_sample(base) and not config.in_sample_output_alerts and verdict.status == "alert":
            verdict = Result(name, role, base["kind"], VERDICT, 0.0, None, None, "warning")
            rows_of = [*rows_of[:-1], verdict]
        results.extend(rows_of)
        if role == "feature":
            features += verdict.status != "n/a"
            seen = profile.get(name)
            rows = max(rows, int(seen["n"] + seen["null_count"]) if seen else 0)
        if verdict.status == "alert":
            (drifted if role == "feature" else outputs_drifted).append(name)
        elif verdict.status == "warning":
            warnings.append(name)
    return DriftCheck(results=results, rows=rows, features=features, drifted=drifted,
                      outputs_drifted=outputs_drifted, warnings=warnings,
                      notes=baseline_notes([m.base for m in measured]))


def baseline_notes(baseline: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a check of this baseline cannot do, in words: outputs profiled in-sample, numeric
    columns recorded without per-bin sums."""
    notes = []
    for base in baseline:
        name = base["column_name"]
        if _in_sample(base):
            notes.append(f"{name}: its baseline is in-sample (the model's own training rows), so its drift is only "
                         "a warning (unless in_sample_output_alerts); register with --validation-data or "
                         "--baseline-cv K for alerts")
        if base["kind"] == "numeric" and base.get("sums") is None and base["edges"]:
            notes.append(f"{name}: no Wasserstein distance, the baseline has no per-bin sums (recorded before they "
                         "were kept); register the model version again to compute it")
    return notes


def _in_sample(base: Mapping[str, Any]) -> bool:
    return base["role"] == "output" and base.get("source", "in_sample") == "in_sample"


def status_of(value: float | None, limits: tuple[float, float] | None) -> str:
    """'alert', 'warning' or 'ok' by the magnitude of ``value``; 'n/a' when it is undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if limits is None:
        return "ok"
    warning, alert = limits
    return "alert" if abs(value) >= alert else "warning" if abs(value) >= warning else "ok"


def _result(name: str, role: str, kind: str, metric: str, value: float | None, effect: float | None,
            config: DriftConfig) -> Result:
    limits = config.limits(name, metric)
    clean = None if value is None or not math.isfinite(value) else float(value)
    return Result(name, role, kind, metric, clean, limits[0] if limits else None, limits[1] if limits else None,
                  status_of(None if clean is None else effect, limits))


def _empty(bins: int) -> dict[str, Any]:
    return {"counts": [0] * bins, "sums": None, "null_count": 0, "n": 0, "min": None, "max": None, "unseen": 0}
