"""What the report draws beside the metrics: per window, a classifier's confusion matrix and
reliability curve, from the stored tallies; a regressor's predictions against their labels, from
a sample of the matches (its tallies keep only sums).

The tallies hold, per class, a 200-bin histogram of that class's probability among the rows of
the class and among the others. A reliability bin's observed frequency is the share of the first
in the two; its mean probability is taken from the fine bins' centres, so it is within half a
fine bin (0.0025) of the true mean. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from monitor import tallies
from monitor.charts import Point
from store.monitoring import StoredTally

#: Bins of a reliability curve (each of 200 / 10 = 20 tally bins).
RELIABILITY_BINS = 10
#: The row of a confusion matrix for labels that are none of the model's classes.
OTHER = "(no class)"


@dataclass(frozen=True)
class Window:
    """One time window of labels (of one model version; backfill labels apart)."""

    start: datetime
    end: datetime
    version: int
    backfill: bool


@dataclass(frozen=True)
class WindowDiagnostics:
    """A classifier's labels in one window: counts by actual and predicted class, and per class
    its reliability curve (one class, the positive one, for a binary classifier)."""

    window: Window
    labels: int
    classes: tuple[str, ...]
    actual: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    reliability: Mapping[str, tuple[Point, ...]]


@dataclass(frozen=True)
class Match:
    """A regressor's matched label: its prediction, its value, and whether it is a backfill."""

    prediction: float
    actual: float
    event_time: datetime
    backfill: bool


def confusion(classes: Sequence[str], tally: np.ndarray) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Rows (actual classes, and `OTHER` when some labels are no class) and their counts per predicted class."""
    counts = tallies.confusion(len(classes), tally)
    rows = [*classes, OTHER] if counts[-1].sum() else list(classes)
    return tuple(rows), tuple(tuple(int(round(v)) for v in line) for line in counts[:len(rows)])


def reliability(classes: Sequence[str], tally: np.ndarray, *, bins: int = RELIABILITY_BINS
                ) -> dict[str, tuple[Point, ...]]:
    """Per class, (mean predicted probability, observed frequency, labels) of each non-empty
    bin; for two classes only the second (the positive class)."""
    hist = tallies.score_histograms(len(classes), tally)
    fine = tallies.BINS // bins
    centres = (np.arange(tallies.BINS) + 0.5) / tallies.BINS
    out = {}
    for c in range(len(classes)) if len(classes) > 2 else (1,):
        positive, negative = hist[c, 0], hist[c, 1]
        total = positive + negative
        points = []
        for b in range(bins):
            part = slice(b * fine, (b + 1) * fine)
            n = float(total[part].sum())
            if n > 0:
                points.append(Point(round(float((centres[part] * total[part]).sum() / n), 4),
                                    float(positive[part].sum() / n), int(round(n))))
        out[str(classes[c])] = tuple(points)
    return out


def windows_of(performance: Iterable[Mapping[str, Any]]) -> list[Window]:
    """The windows of the served runs' realized performance rows, newest first, in-force labels
    before backfill ones."""
    found = {Window(r["window_start"], r["window_end"], r["model_version"], bool(r.get("backfill")))
             for r in performance
             if r["scope"] == "window" and r["run_role"] == "current" and not r["estimated"]}
    return sorted(found, key=lambda w: (w.backfill, -w.start.timestamp(), -w.version))


def by_window(stored: Iterable[StoredTally], windows: Sequence[Window], classes: Mapping[int, Sequence[str]]
              ) -> list[WindowDiagnostics]:
    """Each window's diagnostics, from the stored tallies: the served runs' tallies of the window's
    days, summed."""
    summed: dict[Window, list[Any]] = {}
    for row in stored:
        if row.run_role != "current":
            continue
        window = next((w for w in windows if w.version == row.model_version and w.backfill == row.backfill
                       and w.start <= row.day < w.end), None)
        if window is None:
            continue
        vector = np.asarray(row.tally, dtype=np.float64)
        if window in summed:
            summed[window][0] = summed[window][0] + vector
            summed[window][1] += row.labels
        else:
            summed[window] = [vector, row.labels]
    out = []
    for window in windows:
        if window not in summed:
            continue
        vector, labels = summed[window]
        names = [str(c) for c in classes[window.version]]
        actual, counts = confusion(names, vector)
        out.append(WindowDiagnostics(window, int(labels), tuple(names), actual, counts, reliability(names, vector)))
    return out


def matches(rows: Iterable[Sequence[Any]]) -> list[Match]:
    """`Match`es from ``(prediction, label value, event time, matched as)`` rows, those with both numbers."""
    return [Match(float(p), float(a), t, kind == "earliest") for p, a, t, kind in rows
            if p is not None and a is not None and math.isfinite(p) and math.isfinite(a)]
