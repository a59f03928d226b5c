"""The distances and tests drift is judged by, each on plain arrays of bin counts (the simulated
ones also on rows of draws): PSI, Jensen-Shannon, Kolmogorov-Smirnov, Cohen's w, Wasserstein,
chi-square with sparse cells merged, Fisher's test of the null rate, and Holm's and
Benjamini-Hochberg's corrections. Pure functions, no I/O; `monitor.stats` decides with them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

#: Share given to an empty bin in PSI, so that a bin empty on one side gives a finite value.
PSI_FLOOR = 1e-4
#: A chi-square cell's smallest expected count before sparse cells are merged (Cochran's rule).
MIN_EXPECTED = 5.0
Counts = Sequence[float] | np.ndarray


def psi(base_counts: Counts, counts: Counts) -> Any:
    """Population stability index, sum((q - p) ln(q / p)), empty bins floored at `PSI_FLOOR`."""
    p, q = _shares(base_counts), _shares(counts)
    p, q = np.where(p == 0, PSI_FLOOR, p), np.where(q == 0, PSI_FLOOR, q)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def jensen_shannon(base_counts: Counts, counts: Counts) -> Any:
    """Jensen-Shannon distance in base 2 (0 identical, 1 disjoint)."""
    q = _shares(counts)
    return jensenshannon(np.broadcast_to(_shares(base_counts), q.shape), q, base=2, axis=-1)


def ks(base_counts: Counts, counts: Counts) -> Any:
    """Kolmogorov-Smirnov statistic: the largest gap between the binned cumulative shares."""
    return np.max(np.abs(np.cumsum(_shares(base_counts)) - np.cumsum(_shares(counts), axis=-1)), axis=-1)


def cohens_w(base_counts: Counts, counts: Counts) -> Any:
    """Cohen's w of a batch against the baseline's shares p, sqrt(sum((q - p)^2 / p)): the
    chi-square statistic per row, which does not grow with the batch size. A bin the baseline
    never saw is weighed by the pooled share instead of p = 0."""
    b, c = np.asarray(base_counts, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    p, q = _shares(b), _shares(c)
    n_base, n = b.sum(), c.sum(axis=-1, keepdims=True)
    reference = np.where(p > 0, p, (n_base * p + n * q) / (n_base + n))
    gap = np.where(reference > 0, (p - q) ** 2 / np.where(reference > 0, reference, 1.0), 0.0)
    return np.sqrt(np.sum(gap, axis=-1))


def wasserstein(base_positions: np.ndarray, base_counts: Sequence[float], positions: np.ndarray,
                counts: Sequence[float], scale: float) -> float:
    """Earth mover's distance between the two binned distributions, each side's mass at its own
    positions, divided by ``scale``."""
    return float(stats.wasserstein_distance(base_positions, positions, base_counts, counts)) / scale


def ks_p_value(statistic: float, n_base: int, n: int) -> float:
    """Two-sample KS p-value, Smirnov's asymptotic form (as `scipy.stats.ks_2samp` method='asymp')."""
    m, k = sorted([float(n_base), float(n)], reverse=True)
    return float(stats.kstwo.sf(statistic, np.round(m * k / (m + k))))


def chi_square(base_counts: Sequence[float], counts: Sequence[float]) -> tuple[float, float, float]:
    """Chi-square test of homogeneity of two rows of counts: (statistic, p-value, Cramér's V).

    The statistic and V are of the whole table (bins empty on both sides left out); the p-value is
    of the table whose sparsest cells are merged until every expected count is at least
    `MIN_EXPECTED`, where the chi-square distribution holds. Nothing left to compare: (0, 1, 0).
    """
    table = np.vstack([np.asarray(base_counts, dtype=np.float64), np.asarray(counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    statistic = float(stats.chi2_contingency(table, correction=False).statistic)
    merged = merge_sparse(table)
    p_value = float(stats.chi2_contingency(merged, correction=False).pvalue) if merged.shape[1] > 1 else 1.0
    return statistic, p_value, math.sqrt(statistic / table.sum())


def merge_sparse(table: np.ndarray) -> np.ndarray:
    """Merge a 2 x k table's columns, sparsest first, until each expected count >= `MIN_EXPECTED`."""
    columns = sorted(table.T.tolist(), key=sum)
    smaller_row = table.sum(axis=1).min() / table.sum()
    while len(columns) > 1 and sum(columns[0]) * smaller_row < MIN_EXPECTED:
        first, second = columns.pop(0), columns.pop(0)
        columns = sorted([[a + b for a, b in zip(first, second, strict=True)], *columns], key=sum)
    return np.asarray(columns, dtype=np.float64).T


def null_test(base_nulls: int, base_total: int, nulls: int, total: int) -> float:
    """p-value of a change in the share of missing values: Fisher's exact test, valid at any count."""
    if not base_nulls and not nulls:
        return 1.0
    table = [[base_nulls, base_total - base_nulls], [nulls, total - nulls]]
    return float(stats.fisher_exact(table).pvalue)


def adjust(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values corrected for testing them together: Holm's step-down, or Benjamini-Hochberg."""
    p = np.asarray(p_values, dtype=np.float64)
    if not len(p):
        return p
    if method == "bh":
        return np.asarray(stats.false_discovery_control(p, method="bh"))
    order = np.argsort(p)
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(stepped, 1.0)
    return out


def _shares(counts: Counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum(axis=-1, keepdims=True)
