"""Sequential drift detection across runs: a CUSUM per column, for small persistent shifts that
no single run's test flags.

Pure functions. Each served run gives each column one standardized score ``z``, N(0, 1) when
nothing drifted: for a number, its batch mean against the baseline's mean in standard errors
(two-sided: one CUSUM up, one down); for a category, the normal quantile of its chi-square
p-value (one-sided: any change raises it). Each CUSUM adds ``z - k`` and never falls below 0;
it alarms past ``h``, then starts again from 0. All of them start from 0 when a new model
version becomes current.

``h`` is set from Siegmund's approximation of the in-control average run length, so that the
whole check (every one-sided CUSUM of it) raises a false alarm once in ``arl`` quiet runs on
average; the benchmark measures it. Every run is compared with the same frozen baseline, whose
own sampling error is shared by all runs: ``k`` grows by twice that error's share of a run's
variance, so that a baseline that happens to sit off the truth does not accumulate into an
alarm (a shift smaller than the baseline can resolve is not sought).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import optimize, stats

from monitor import stats as drift

#: Siegmund's correction of the threshold for the overshoot of a normal CUSUM.
OVERSHOOT = 1.166


@dataclass(frozen=True)
class CusumConfig:
    """The CUSUM's reference value and its target average run length between false alarms."""

    k: float = 0.5
    arl: float = 365.0


@dataclass(frozen=True)
class Score:
    """One column's standardized score in one run, and the share ``rho`` of its variance that
    comes from the baseline (shared by every run)."""

    z: float
    rho: float
    two_sided: bool


def run_length(h: float, k: float) -> float:
    """Siegmund's approximation of a one-sided CUSUM's in-control average run length."""
    b = 2 * k * (h + OVERSHOOT)
    return (math.exp(b) - b - 1) / (2 * k * k)


def threshold(k: float, arl: float) -> float:
    """The ``h`` whose in-control average run length (`run_length`) is ``arl``."""
    return float(optimize.brentq(lambda h: run_length(h, k) - arl, 0.0, 200.0))


def score(base: Mapping[str, Any], profile: Mapping[str, Any] | None) -> Score | None:
    """A column's score in one run, or None when it has nothing to compare."""
    if profile is None:
        return None
    n_base, n = int(sum(base["counts"])), int(profile["n"])
    if not n_base or not n:
        return None
    rho = (1 / n_base) / (1 / n + 1 / n_base)
    if base["kind"] == "numeric":
        std = base.get("std")
        if not std or base.get("mean") is None:
            return None
        error = float(std) * math.sqrt(1 / n + 1 / n_base)
        return Score((float(profile["sum"]) / n - float(base["mean"])) / error, rho, True)
    p_value = drift.chi_square(base["counts"], profile["counts"])[1]
    return Score(float(stats.norm.isf(max(p_value, 1e-300))), rho, False)


def step(state: Mapping[str, tuple[float, float]], scores: Mapping[str, Score], config: CusumConfig
         ) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]], float]:
    """Advance every column's (up, down) CUSUM by one run. Returns the new state, the columns
    that alarmed (with their CUSUMs as they crossed) and ``h``; an alarmed column starts again at 0."""
    statistics = sum(2 if s.two_sided else 1 for s in scores.values())
    h = threshold(config.k, config.arl * max(statistics, 1))
    new: dict[str, tuple[float, float]] = {}
    alarms: dict[str, tuple[float, float]] = {}
    for name, s in scores.items():
        k = config.k + 2 * math.sqrt(s.rho)
        up, down = state.get(name, (0.0, 0.0))
        up = max(0.0, up + s.z - k)
        down = max(0.0, down - s.z - k) if s.two_sided else 0.0
        if max(up, down) > h:
            alarms[name] = (up, down)
            up = down = 0.0
        new[name] = (up, down)
    return new, alarms, h


def advance(baseline: Sequence[Mapping[str, Any]], profile: Mapping[str, Mapping[str, Any]],
            state: Mapping[str, tuple[float, float]], config: CusumConfig
            ) -> tuple[list[drift.Result], dict[str, tuple[float, float]], float]:
    """One served run's CUSUM step over every column of its check: the rows to record
    (``cusum_z``, ``cusum_up``, ``cusum_down``; 'alert' on the one that crossed ``h``, and then the
    column starts again from 0), the alarms and ``h``."""
    columns = {b["column_name"]: b for b in baseline}
    scores = {name: s for name, b in columns.items() if (s := score(b, profile.get(name))) is not None}
    new, alarms, h = step(state, scores, config)
    rows = []
    for name, s in scores.items():
        b = columns[name]
        up, down = alarms.get(name, new[name])
        rows += [drift.Result(name, b["role"], b["kind"], "cusum_z", s.z, None, None, "ok"),
                 drift.Result(name, b["role"], b["kind"], "cusum_up", up, None, h, "alert" if up > h else "ok"),
                 drift.Result(name, b["role"], b["kind"], "cusum_down", down, None, h,
                              "alert" if down > h else "ok")]
    return rows, alarms, h
