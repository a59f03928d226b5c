"""The publish gate: whether a run looks like the batch the user already accepted, judged before it
is served. Pure functions over profiles (histograms counted while the run streamed, in the model
version's baseline bins) and row counts; no I/O.

It is built to catch breakage, not drift: a column in another unit, a feed of nulls, a join that
lost half the rows. Each column's histogram (its nulls as one more cell) is compared with the
previous published run's by a chi-square test of homogeneity, the p-values corrected by Holm's
method, and a column fails only when its corrected p-value is under ``alpha`` and the effect
(Cohen's w) is at least ``min_effect``: with a million rows a trivial shift is significant, and
gradual drift is the monitor's business. On batches drawn from one distribution the gate holds
at most ``alpha`` of them (`benchmarks/bench_gate.py` simulates it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

#: A cell's smallest expected count before sparse cells are merged (Cochran's rule).
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class GatePolicy:
    """How strict the gate is."""

    alpha: float = 0.01
    #: Cohen's w a column must reach to fail: 0.3 is a medium effect, breakage is larger.
    min_effect: float = 0.3
    #: The largest relative change of the row count against the partition's previous run.
    max_row_change: float = 0.5


@dataclass(frozen=True)
class Finding:
    """Why a run fails the gate, one line for a person."""

    column: str | None
    reason: str


def judge(previous: Mapping[str, Mapping[str, Any]], profile: Mapping[str, Mapping[str, Any]], *,
          rows: int, previous_rows: int | None, policy: GatePolicy) -> list[Finding]:
    """What is wrong with a run whose ``profile`` and ``rows`` are compared with ``previous`` (the
    accepted batch's profile, or the training baseline's counts) and ``previous_rows`` (the
    partition's previous run; None if it has none). Empty: the run may be served."""
    findings = []
    if previous_rows:
        change = abs(rows - previous_rows) / previous_rows
        if change >= policy.max_row_change:
            findings.append(Finding(None, f"{rows} rows where the partition's previous run had {previous_rows} "
                                          f"({change:.0%} change, limit {policy.max_row_change:.0%})"))
    names = [n for n in profile if n in previous]
    tests = [homogeneity(_cells(previous[n]), _cells(profile[n])) for n in names]
    adjusted = holm([p for p, _ in tests])
    for name, (_, effect), p in zip(names, tests, adjusted, strict=True):
        if p < policy.alpha and effect >= policy.min_effect:
            findings.append(Finding(name, f"{name}: distribution unlike the accepted batch's "
                                          f"(Cohen's w {effect:.2f}, p {p:.2g})"))
    return findings


def homogeneity(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(p-value, Cohen's w) of a chi-square test that two histograms come from one distribution,
    sparse cells merged."""
    table = np.asarray([a, b], dtype=np.float64)
    if table.sum(axis=1).min() <= 0:
        return 1.0, 0.0
    table = _merge_sparse(table[:, table.sum(axis=0) > 0])
    if table.shape[1] < 2:
        return 1.0, 0.0
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(p), math.sqrt(float(chi2) / float(table.sum()))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (family-wise error at most alpha)."""
    order = np.argsort(p_values)
    m, running, adjusted = len(p_values), 0.0, [1.0] * len(p_values)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _cells(column: Mapping[str, Any]) -> list[float]:
    """A column's histogram with its nulls as one more cell."""
    return [*map(float, column.get("counts") or []), float(column.get("null_count") or 0)]


def _merge_sparse(table: np.ndarray) -> np.ndarray:
    """Merge each cell whose expected count is under `MIN_EXPECTED` into its neighbour, in order."""
    expected = table.sum(axis=0) * table.sum(axis=1).min() / table.sum()
    columns: list[np.ndarray] = []
    pending = np.zeros(table.shape[0])
    pending_expected = 0.0
    for j in range(table.shape[1]):
        pending = pending + table[:, j]
        pending_expected += expected[j]
        if pending_expected >= MIN_EXPECTED:
            columns.append(pending)
            pending, pending_expected = np.zeros(table.shape[0]), 0.0
    if pending.sum() > 0:
        if columns:
            columns[-1] = columns[-1] + pending
        else:
            columns.append(pending)
    return np.stack(columns, axis=1)
