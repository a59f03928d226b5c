"""Champion against challenger: the same rows, scored by both, compared on the labels that arrived.

Entities, not rows, are the unit of evidence: an entity re-scored every day carries one outcome,
so its paired rows are collapsed into one loss difference (their mean) before any interval is
taken. Two intervals of the mean difference over entities are reported: a fixed-sample one
(Student t), valid for one look, and an anytime-valid confidence sequence (Waudby-Smith et al.,
"Time-uniform central limit theory and asymptotic confidence sequences", 2021), valid however
often it is looked at. The verdict, and so `promote --if-better`, uses the confidence sequence,
which is what lets the scheduler ask after every ingest without promoting on noise.

Pure statistics over arrays, and `compare_models`, which reads the paired runs and compares them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from models.performance import LOG_LOSS_FLOOR, canonical_all, probabilities
from monitor import charts
from monitor.report import fmt, page
from monitor.stats import psi
from store import challengers, profiles, registry
from store.db import connect
from store.errors import NotFound
from store.migrate import prepare
from store.settings import Settings

#: Labeled entities needed before any verdict.
MIN_LABELS = 100
#: The confidence sequence is tightest near this many labeled entities (or ``min_labels``, if more).
TIGHTEST_AT = 1000
PAIR_COLUMNS = ("entity_id", "cur_pred", "cur_label", "cur_scores", "ch_pred", "ch_label", "ch_scores")


class Verdict(StrEnum):
    """What the labels say about the challenger (from its loss minus the current version's)."""

    BETTER = "challenger better"
    NOT_WORSE = "challenger not worse"  # within --margin, not known to be better
    WORSE = "challenger worse"
    UNDECIDED = "not yet distinguishable"
    TOO_FEW_LABELS = "not enough labels"
    NO_LABELS = "not yet distinguishable (no labels)"

    @property
    def promotes(self) -> bool:
        """Whether `promote --if-better` promotes on this verdict."""
        return self in (Verdict.BETTER, Verdict.NOT_WORSE)


@dataclass(frozen=True)
class Interval:
    """The mean loss difference (challenger - current) over ``entities`` and its bounds."""

    difference: float
    low: float
    high: float
    entities: int


@dataclass(frozen=True)
class WindowPoint:
    """The comparison on the paired runs published up to the end of one day."""

    day: str
    labeled_entities: int
    difference: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    """Champion against challenger on their paired runs."""

    model: str
    current_version: int
    challenger_version: int
    task: str
    paired_runs: int
    rows: int
    entities: int
    labeled_rows: int
    labeled_entities: int
    confidence: float
    min_labels: int
    margin: float
    verdict: Verdict
    disagreement: dict[str, float] | None = None
    output_psi_vs_baseline: dict[str, float | None] = field(default_factory=dict)
    current_metric: float | None = None
    challenger_metric: float | None = None
    interval: Interval | None = None
    anytime_interval: Interval | None = None
    history: tuple[WindowPoint, ...] = ()

    @property
    def metric(self) -> str:
        return "mean absolute error" if self.task == "regression" else "log loss"

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON of `predstore models compare --json`."""
        return {
            "model": self.model, "current_version": self.current_version, "challenger_version": self.challenger_version,
            "paired_runs": self.paired_runs, "rows": self.rows, "entities": self.entities,
            "labeled_rows": self.labeled_rows, "labeled_entities": self.labeled_entities, "metric": self.metric,
            "confidence": self.confidence, "min_labels": self.min_labels, "margin": self.margin,
            "disagreement": self.disagreement, "output_psi_vs_baseline": self.output_psi_vs_baseline,
            "current_metric": self.current_metric, "challenger_metric": self.challenger_metric,
            "difference": self.interval.difference if self.interval else None,
            "interval": [self.interval.low, self.interval.high] if self.interval else None,
            "anytime_interval": ([self.anytime_interval.low, self.anytime_interval.high]
                                 if self.anytime_interval else None),
            "verdict": self.verdict.value, "promotes": self.verdict.promotes,
            "history": [asdict(p) for p in self.history],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], task: str) -> Comparison:
        """A comparison back from its `to_dict` (as `store.challengers` keeps it)."""
        def interval(bounds: list[float] | None, difference: float | None, entities: int) -> Interval | None:
            return Interval(difference, bounds[0], bounds[1], entities) if bounds and difference is not None else None

        history = tuple(WindowPoint(**p) for p in d.get("history") or [])
        anytime = d.get("anytime_interval")
        return cls(model=d["model"], current_version=d["current_version"], challenger_version=d["challenger_version"],
                   task=task, paired_runs=d["paired_runs"], rows=d["rows"], entities=d["entities"],
                   labeled_rows=d["labeled_rows"], labeled_entities=d["labeled_entities"],
                   confidence=d["confidence"], min_labels=d["min_labels"], margin=d["margin"],
                   verdict=Verdict(d["verdict"]), disagreement=d.get("disagreement"),
                   output_psi_vs_baseline=d.get("output_psi_vs_baseline") or {},
                   current_metric=d.get("current_metric"), challenger_metric=d.get("challenger_metric"),
                   interval=interval(d.get("interval"), d.get("difference"), d["labeled_entities"]),
                   anytime_interval=interval(anytime, d.get("difference"), d["labeled_entities"]),
                   history=history)

    def evidence(self) -> str:
        """One line: the difference, its anytime interval, and on how many entities."""
        if self.anytime_interval is None:
            return f"{self.labeled_entities} labeled entities (at least {self.min_labels} needed)"
        a = self.anytime_interval
        return (f"{self.metric} difference {a.difference:+.4g}, {self.confidence:.0%} anytime interval "
                f"[{a.low:+.4g}, {a.high:+.4g}] on {a.entities} labeled entities")


# --- pure statistics ---------------------------------------------------------------------------


def row_losses(task: str, predictions: Sequence[float | None], scores: Sequence[Any],
               actual_text: Sequence[str | None], actual_value: Sequence[float | None],
               classes: Sequence[str]) -> np.ndarray:
    """Each row's loss: absolute error (regression) or log loss of the true class (classification,
    NaN where the label is none of ``classes``). Classes and labels are compared in their
    `canonical` form."""
    if task == "regression":
        return np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(actual_value, dtype=np.float64))
    proba = probabilities(predictions, scores, classes)
    column = {c: i for i, c in enumerate(canonical_all(classes))}
    index = np.array([column.get(a, -1) if a is not None else -1 for a in canonical_all(actual_text)], dtype=np.int64)
    p_true = proba[np.arange(len(index)), np.maximum(index, 0)] if len(index) else np.zeros(0)
    return np.where(index >= 0, -np.log(np.clip(p_true, LOG_LOSS_FLOOR, 1.0)), np.nan)


def entity_means(entity: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of ``values`` per entity code (0..k-1), in code order."""
    count = np.bincount(entity)
    return np.bincount(entity, weights=values)[count > 0] / count[count > 0]


def t_interval(x: np.ndarray, confidence: float) -> Interval | None:
    """Mean of ``x`` with its Student t interval: valid for one look at a fixed sample."""
    n = len(x)
    if n < 2:
        return None
    mean, half = float(x.mean()), float(sps.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def confidence_sequence(x: np.ndarray, confidence: float, *, tightest_at: int = TIGHTEST_AT) -> Interval | None:
    """Mean of ``x`` with a two-sided asymptotic confidence sequence: the chance that the true mean
    ever leaves the interval, over every prefix of an i.i.d. sequence, is at most 1 - confidence
    (in the limit; `benchmarks/bench_compare.py` measures it at the sizes used).

    A normal mixture boundary (Robbins) with the sample standard deviation; its mixing variance is
    set so the interval is tightest near ``tightest_at`` observations.
    """
    n = len(x)
    if n < 2:
        return None
    alpha = 1 - confidence
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tightest_at
    spread = n * rho2 + 1
    half = float(x.std(ddof=1)) * math.sqrt(2 * spread / (n * n * rho2) * math.log(math.sqrt(spread) / alpha))
    mean = float(x.mean())
    return Interval(mean, mean - half, mean + half, n)


def decide(interval: Interval | None, *, labeled: int, min_labels: int, margin: float = 0.0) -> Verdict:
    """The verdict from the interval of (challenger loss - current loss) over labeled entities.

    With a ``margin`` > 0 (in the metric's units), a challenger whose loss is known to be at most
    ``margin`` above the current one's is *not worse* (non-inferiority), and promotable.
    """
    if labeled == 0:
        return Verdict.NO_LABELS
    if labeled < min_labels or interval is None:
        return Verdict.TOO_FEW_LABELS
    if interval.high < 0:
        return Verdict.BETTER
    if margin > 0 and interval.high < margin:
        return Verdict.NOT_WORSE
    if interval.low > 0:
        return Verdict.WORSE
    return Verdict.UNDECIDED


@dataclass(frozen=True)
class Evidence:
    """The statistics of a comparison, from the paired rows."""

    labeled_rows: int
    labeled_entities: int
    current_metric: float | None
    challenger_metric: float | None
    interval: Interval | None
    anytime_interval: Interval | None
    history: tuple[WindowPoint, ...]


def weigh(task: str, classes: Sequence[str], paired: pd.DataFrame, *, confidence: float,
          min_labels: int) -> Evidence:
    """Collapse the paired rows to one loss difference per labeled entity and take its intervals.

    ``paired`` has the `PAIR_COLUMNS`, ``actual``, ``actual_value`` and ``day`` (the day the
    pair was published, for the history). Pure.
    """
    current = row_losses(task, paired["cur_pred"].tolist(), paired["cur_scores"].tolist(),
                         paired["actual"].tolist(), paired["actual_value"].tolist(), classes)
    challenger = row_losses(task, paired["ch_pred"].tolist(), paired["ch_scores"].tolist(),
                            paired["actual"].tolist(), paired["actual_value"].tolist(), classes)
    labeled = np.isfinite(current) & np.isfinite(challenger)
    if not labeled.any():
        return Evidence(0, 0, None, None, None, None, ())
    entity = pd.factorize(paired["entity_id"].to_numpy()[labeled])[0]
    diff = challenger[labeled] - current[labeled]
    days = paired["day"].to_numpy()[labeled]
    tightest = max(min_labels, TIGHTEST_AT)
    history = []
    for day in sorted(set(days.tolist())):
        upto = days <= day
        per_entity = entity_means(entity[upto], diff[upto])
        seq = confidence_sequence(per_entity, confidence, tightest_at=tightest)
        history.append(WindowPoint(day, len(per_entity), float(per_entity.mean()),
                                   seq.low if seq else None, seq.high if seq else None))
    per_entity = entity_means(entity, diff)
    return Evidence(
        labeled_rows=int(labeled.sum()), labeled_entities=len(per_entity),
        current_metric=float(entity_means(entity, current[labeled]).mean()),
        challenger_metric=float(entity_means(entity, challenger[labeled]).mean()),
        interval=t_interval(per_entity, confidence),
        anytime_interval=confidence_sequence(per_entity, confidence, tightest_at=tightest),
        history=tuple(history))


def disagreement(task: str, paired: pd.DataFrame) -> dict[str, float] | None:
    """How far the two versions' predictions differ, over every paired row."""
    if not len(paired):
        return None
    a, b = paired["cur_pred"].to_numpy(dtype=np.float64), paired["ch_pred"].to_numpy(dtype=np.float64)
    out = {"mean_abs_prediction_difference": float(np.nanmean(np.abs(a - b)))}
    if task == "classification":
        out["flipped_labels_share"] = float(np.mean(paired["cur_label"].to_numpy() != paired["ch_label"].to_numpy()))
    return out


# --- from the store ----------------------------------------------------------------------------


def compare_models(settings: Settings, model_name: str, *, since: datetime | None = None,
                   confidence: float = 0.95, min_labels: int = MIN_LABELS, margin: float = 0.0) -> Comparison:
    """Compare the current version of ``model_name`` with its challenger on their paired runs.

    Each entity is judged by its latest label.
    """
    with connect(prepare(settings), autocommit=True, application_name="predstore-compare") as conn:
        current = registry.get_model(conn, model_name)
        try:
            challenger = registry.get_model(conn, model_name, alias="challenger")
        except NotFound:
            raise NotFound(f"model {model_name!r} has no challenger; set one with "
                           f"`predstore models promote {model_name} VERSION --as challenger`") from None
        pairs = [p for p in challengers.paired_runs(conn, model_name, since=since)
                 if p["current_version"] == current.version and p["challenger_version"] == challenger.version]
        frames = [pd.DataFrame(challengers.side_by_side(conn, p["current_run"], p["challenger_run"]),
                               columns=list(PAIR_COLUMNS)).assign(day=f"{p['published_at']:%Y-%m-%d}")
                  for p in pairs]
        labels = pd.DataFrame(challengers.latest_labels(conn, model_name) if pairs else [],
                              columns=["entity_id", "actual", "actual_value"])
        drift = {"current": _output_psi(conn, model_name, current.version, [p["current_run"] for p in pairs]),
                 "challenger": _output_psi(conn, model_name, challenger.version,
                                           [p["challenger_run"] for p in pairs])}
    paired = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PAIR_COLUMNS, "day"])
    paired = paired.merge(labels, on="entity_id", how="left", sort=False)
    task, classes = current.task, [str(c) for c in (current.classes or [])]
    evidence = weigh(task, classes, paired, confidence=confidence, min_labels=min_labels)
    comparison = Comparison(
        model=current.name, current_version=current.version, challenger_version=challenger.version, task=task,
        paired_runs=len(pairs), rows=len(paired), entities=int(paired["entity_id"].nunique()),
        labeled_rows=evidence.labeled_rows, labeled_entities=evidence.labeled_entities, confidence=confidence,
        min_labels=min_labels, margin=margin,
        verdict=decide(evidence.anytime_interval, labeled=evidence.labeled_entities, min_labels=min_labels,
                       margin=margin),
        disagreement=disagreement(task, paired), output_psi_vs_baseline=drift,
        current_metric=evidence.current_metric, challenger_metric=evidence.challenger_metric,
        interval=evidence.interval, anytime_interval=evidence.anytime_interval, history=evidence.history)
    with connect(prepare(settings), autocommit=True, application_name="predstore-compare") as conn:
        challengers.record_comparison(conn, comparison.to_dict())  # what `predstore ui` shows
    return comparison


def _output_psi(conn: Any, model_name: str, version: int, run_ids: list[int]) -> float | None:
    if not run_ids:
        return None
    base = {b["column_name"]: b for b in profiles.get_baseline(conn, model_name, version)}
    summed = profiles.get_run_profiles(conn, run_ids)
    if "__prediction__" not in base or "__prediction__" not in summed:
        return None
    return float(psi(base["__prediction__"]["counts"], summed["__prediction__"]["counts"]))


# --- the page ------------------------------------------------------------------------------------


def render(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page: the verdict, the figures, and the anytime
    interval over time (after each day's paired runs) as a chart."""
    return page("compare.html", **sections(comparison))


def sections(c: Comparison) -> dict[str, Any]:
    """What ``_comparison.html`` shows of ``c`` (the page, and the console's performance page)."""
    figures = [("paired runs", c.paired_runs), ("paired rows", c.rows), ("entities", c.entities),
               ("labeled entities", f"{c.labeled_entities} (at least {c.min_labels} for a verdict)"),
               (f"{c.metric}, current v{c.current_version}", fmt(c.current_metric)),
               (f"{c.metric}, challenger v{c.challenger_version}", fmt(c.challenger_metric))]
    if c.interval:
        figures.append((f"difference, {c.confidence:.0%} interval (one look)",
                        f"{fmt(c.interval.difference)} [{fmt(c.interval.low)}, {fmt(c.interval.high)}]"))
    if c.anytime_interval:
        figures.append((f"{c.confidence:.0%} anytime interval (any number of looks)",
                        f"[{fmt(c.anytime_interval.low)}, {fmt(c.anytime_interval.high)}]"))
    if c.margin:
        figures.append(("non-inferiority margin", fmt(c.margin)))
    for key, value in (c.disagreement or {}).items():
        figures.append((key.replace("_", " "), fmt(value)))
    for key, psi_value in c.output_psi_vs_baseline.items():
        figures.append((f"output PSI against its baseline, {key}", fmt(psi_value)))
    history = None
    if c.history:
        history = charts.lines(
            f"{c.metric} difference (challenger - current) and its anytime interval, by day",
            [p.day for p in c.history], {"difference": [p.difference for p in c.history]},
            band=([p.low for p in c.history], [p.high for p in c.history]),
            band_label=f"{c.confidence:.0%} anytime interval", reference=c.margin or 0.0,
            reference_label="margin" if c.margin else "zero", x_label="day of the paired runs",
            y_label=f"{c.metric} difference", kind="interval")
    return {"c": c, "figures": figures, "history": history}
