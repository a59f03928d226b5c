"""The HTML reports, read back as a browser would get them: every chart present, with axis ticks
and labels, drawing the data that was ingested; nothing that runs or fetches; values escaped."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from monitor import charts, compare, diagnostics, report, tallies
from monitor.config import MonitorConfig
from monitor.labels import ingest_labels
from monitor.runner import run_monitor, write_report
from store import Settings
from tests import factories

QUIET = MonitorConfig(min_labels=20)
ROOT = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """The page's charts: per <svg class="chart KIND">, its title and its elements (tag, attributes,
    text); and every tag and attribute seen."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.charts: list[dict[str, Any]] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._open: dict[str, Any] | None = None
        self._text: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "svg" and "chart" in values.get("class", "").split():
            self._open = {"kind": values["class"].split()[1], "label": values.get("aria-label"), "elements": []}
            self.charts.append(self._open)
        elif self._open is not None:
            self._open["elements"].append([tag, values, ""])
            self._text = self._open["elements"][-1]

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._open = None
        self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text[2] += data

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.charts if c["kind"] == kind]


def marks(chart: dict[str, Any], cls: str) -> list[dict[str, str]]:
    return [attrs for tag, attrs, _ in chart["elements"] if cls in attrs.get("class", "").split()]


def texts(chart: dict[str, Any], cls: str) -> list[str]:
    return [text for tag, attrs, text in chart["elements"] if tag == "text" and cls in attrs.get("class", "").split()]


def assert_self_contained_with_axes(page: str) -> Page:
    parsed = Page(page)
    assert "<script" not in page.lower() and " on" not in "".join(f" {k}" for _, a in parsed.tags for k in a)
    assert not [(t, a) for t, a in parsed.tags if {"src", "href"} & set(a)]
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert parsed.charts
    for chart in parsed.charts:
        x_label, y_label = texts(chart, "axis-label")[:2]
        assert x_label.strip() and y_label.strip(), chart["label"]
        assert len([e for e in chart["elements"] if "tick" in e[1].get("class", "") and "y" in e[1]["class"]]) >= 2
        assert [e for e in chart["elements"] if e[1].get("class") == "tick x" and e[2].strip()], chart["label"]
    return parsed


# --- a classifier, end to end ----------------------------------------------------------------


@pytest.fixture
def labeled_classifier(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """A binary classifier, one scored partition, and its labels in two weeks after publication."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    data = factories.frame(600, seed=7)
    run = score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                                 model_name="churn"))
    assert run.run_id is not None
    first, second = datetime.now(UTC) + timedelta(days=1), datetime.now(UTC) + timedelta(days=8)
    when = [first] * 350 + [second] * 250
    labels = pd.DataFrame({"id": data["entity_id"], "y": data["y"], "at": when})
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="churn", entity_col="id", label_col="y",
                  time_col="at")
    run_monitor(settings, "churn", config=QUIET)
    model = joblib.load(artifact)
    data["predicted"] = model.predict(data[factories.FEATURES])
    data["p1"] = model.predict_proba(data[factories.FEATURES])[:, 1]
    data["week"] = [0] * 350 + [1] * 250
    return {"data": data, "page": write_report(settings, "churn", tmp_path / "report.html").read_text()}


def test_a_classifier_report_has_a_confusion_matrix_per_window_with_the_ingested_counts(
        labeled_classifier: dict[str, Any]) -> None:
    data, parsed = labeled_classifier["data"], assert_self_contained_with_axes(labeled_classifier["page"])
    matrices = parsed.of("confusion")
    assert len(matrices) == 2  # newest window first
    for chart, week in zip(matrices, (1, 0), strict=True):
        rows = data[data["week"] == week]
        expected = {(str(a), str(p)): int(((rows["y"] == a) & (rows["predicted"] == p)).sum())
                    for a in (0, 1) for p in (0, 1)}
        cells = {(c["data-row"], c["data-column"]): int(c["data-count"]) for c in marks(chart, "cell")}
        assert cells == expected
        assert sorted(texts(chart, "count"), key=int) == sorted((str(v) for v in expected.values()), key=int)
        assert texts(chart, "axis-label")[:2] == ["predicted", "actual"]


def test_a_classifier_report_draws_each_window_s_reliability_curve(labeled_classifier: dict[str, Any]) -> None:
    data, parsed = labeled_classifier["data"], Page(labeled_classifier["page"])
    curves = parsed.of("reliability")
    assert len(curves) == 2
    rows = data[data["week"] == 0]
    bins = np.clip((rows["p1"] * 10).astype(int), 0, 9)
    expected = {b: (rows["p1"][bins == b].mean(), rows["y"][bins == b].mean(), int((bins == b).sum()))
                for b in sorted(set(bins))}
    points = marks(curves[1], "point")
    assert [int(p["data-n"]) for p in points] == [n for _, _, n in expected.values()]
    for point, (mean_p, frequency, _) in zip(points, expected.values(), strict=True):
        assert float(point["data-y"]) == pytest.approx(frequency)
        assert float(point["data-x"]) == pytest.approx(mean_p, abs=0.003)  # the fine bins' centres
    assert {p["data-series"] for p in points} == {"class 1"}
    assert texts(curves[1], "axis-label")[:2] == ["mean predicted probability", "observed frequency"]
    assert marks(curves[1], "reference")  # the diagonal


def test_a_classifier_report_keeps_the_drift_and_performance_charts(labeled_classifier: dict[str, Any]) -> None:
    parsed = Page(labeled_classifier["page"])
    trends = {t["label"]: t for t in parsed.of("trend")}
    assert set(trends) >= {f"{c}: drift per run" for c in factories.FEATURES}
    assert {p["data-series"] for p in marks(trends["f0: drift per run"], "point")} == {"wasserstein", "psi"}
    assert len(parsed.of("drift-share")) == 1
    (performance,) = parsed.of("performance")
    assert [p["data-y"] for p in marks(performance, "point")]  # accuracy per window
    assert len(marks(performance, "share")) == 2 and marks(performance, "band")
    assert "label coverage" in texts(performance, "axis-label")
    assert "<th>roc_auc</th>" in labeled_classifier["page"]  # a figure read from binned scores says so
    assert "roc_auc is read from 200-bin score histograms" in labeled_classifier["page"]


def test_the_monitor_command_says_its_roc_auc_is_binned(settings: Settings, tmp_path: Path,
                                                         cli_env: dict[str, str]) -> None:
    from click.testing import CliRunner

    from predstore.cli import main

    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    data = factories.frame(300, seed=7)
    score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                           model_name="churn"))
    labels = pd.DataFrame({"id": data["entity_id"], "y": data["y"], "at": datetime.now(UTC) + timedelta(days=1)})
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="churn", entity_col="id", label_col="y",
                  time_col="at")
    shown = CliRunner().invoke(main, ["monitor", "--model", "churn"], env=cli_env)
    assert shown.exit_code in (0, 1), shown.output
    assert "roc_auc" in shown.output and f"({tallies.BINNED_AUC})" in shown.output


# --- a regressor -----------------------------------------------------------------------------


def test_a_regressor_report_draws_a_sample_of_its_matched_labels(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(300, seed=2)
    score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                           model_name="amount"))
    start = datetime.now(UTC) + timedelta(days=1)
    labels = pd.DataFrame({"id": data["entity_id"], "truth": data["amount"] + 1.0,
                           "at": [start + timedelta(minutes=i) for i in range(len(data))]})
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="amount", entity_col="id", label_col="truth",
                  time_col="at")
    run_monitor(settings, "amount", config=QUIET)
    page = write_report(settings, "amount", tmp_path / "r.html", sample=50).read_text()
    parsed = assert_self_contained_with_axes(page)
    predicted = joblib.load(artifact).predict(data[factories.FEATURES])
    newest = slice(len(data) - 50, len(data))  # the newest event times
    expected = sorted(zip((data["amount"] + 1.0).iloc[newest], predicted[newest], strict=True))
    (fitted,) = parsed.of("predicted-actual")
    drawn = sorted((float(p["data-x"]), float(p["data-y"])) for p in marks(fitted, "point"))
    assert np.allclose(drawn, expected)
    (residuals,) = parsed.of("residuals")
    drawn = sorted((float(p["data-x"]), float(p["data-y"])) for p in marks(residuals, "point"))
    assert np.allclose(drawn, sorted((p, a - p) for a, p in expected))
    assert texts(residuals, "axis-label")[:2] == ["predicted", "residual (actual - predicted)"]
    assert not parsed.of("confusion") and not parsed.of("reliability")


def test_labels_older_than_their_runs_are_drawn_as_backfill(settings: Settings, tmp_path: Path) -> None:
    """A replay of past data (the demo's case): every label predates the run that scored it, so
    the windows are backfill; the report draws them, and says what they are."""
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(300, seed=2)
    score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                           model_name="amount"))
    past = datetime(2024, 3, 4, tzinfo=UTC)
    labels = pd.DataFrame({"id": data["entity_id"], "truth": data["amount"] + 1.0,
                           "at": [past + timedelta(days=i % 14) for i in range(len(data))]})
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="amount", entity_col="id", label_col="truth",
                  time_col="at")
    run_monitor(settings, "amount", config=QUIET)
    page = write_report(settings, "amount", tmp_path / "r.html").read_text()
    (performance,) = Page(page).of("performance")
    assert performance["label"] == "mae per window (backfill labels)"
    error = np.abs(joblib.load(artifact).predict(data[factories.FEATURES]) - (data["amount"] + 1.0))
    week = np.arange(len(data)) % 14 >= 7  # 2024-03-04 is a Monday: two weekly windows
    drawn = [float(p["data-y"]) for p in marks(performance, "point")]
    assert np.allclose(drawn, [error[~week].mean(), error[week].mean()])
    assert "older than the runs that scored it" in page


# --- pure ------------------------------------------------------------------------------------


def test_names_from_the_data_are_escaped() -> None:
    name = "<img src=x onerror=alert(1)>"
    latest = {"run_id": 1, "partition_key": name, "model_version": 1, "rows": 10, "drifted": 1, "features": 1,
              "dataset_drift": True}
    row = {"column_name": name, "role": "feature", "status": "alert", "psi": 1.0}
    data = report.ReportData(model=name, task="classification", generated_at=datetime.now(UTC), latest=latest,
                             latest_rows=[row], histograms=[report.Histogram(name, ["a", name], [0.5, 0.5],
                                                                             [0.2, 0.8], "alert", "psi 1")],
                             history=[], performance=[])
    page = report.render(data)
    assert name not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    (histogram,) = assert_self_contained_with_axes(page).of("histogram")
    assert [b["data-x"] for b in marks(histogram, "bar")] == ["a", name, "a", name]


def test_labels_that_are_no_class_get_a_row_of_their_own() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    tally = tallies.classification(["a", "b", "c"], ["a", "b", "b"], proba, ["a", "b"])
    rows, counts = diagnostics.confusion(["a", "b"], tally)
    assert rows == ("a", "b", diagnostics.OTHER) and counts == ((1, 0), (0, 1), (0, 1))
    curve = diagnostics.reliability(["a", "b"], tally)
    assert [(p.n, p.y) for p in curve["b"]] == [(1, 0.0), (1, 1.0)]  # "c" is no class: left out


def test_ticks_are_round_and_span_the_range() -> None:
    assert charts.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    low, high = charts.nice_range([0.013, 0.47])
    ticks = charts.nice_ticks(low, high)
    assert low <= 0.013 and high >= 0.47 and ticks[0] == low and ticks[-1] == high
    assert charts.nice_range([], zero=True) == (0.0, 1.0) and charts.nice_range([5.0, 5.0])[0] < 5.0


def test_the_comparison_page_draws_the_anytime_interval_by_day() -> None:
    history = (compare.WindowPoint("2026-03-01", 150, 0.02, -0.05, 0.09),
               compare.WindowPoint("2026-03-02", 300, -0.03, -0.07, 0.01))
    comparison = compare.Comparison(
        model="churn", current_version=1, challenger_version=2, task="classification", paired_runs=2, rows=600,
        entities=300, labeled_rows=300, labeled_entities=300, confidence=0.95, min_labels=100, margin=0.0,
        verdict=compare.Verdict.UNDECIDED, history=history,
        anytime_interval=compare.Interval(-0.03, -0.07, 0.01, 300))
    parsed = assert_self_contained_with_axes(compare.render(comparison))
    (chart,) = parsed.of("interval")
    assert [float(p["data-y"]) for p in marks(chart, "point")] == [0.02, -0.03]
    (band,) = marks(chart, "band")
    assert len(band["points"].split()) == 4
    assert texts(chart, "axis-label")[:2] == ["day of the paired runs", "log loss difference"]


def test_the_templates_ship_with_the_package() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["monitor"]
    root = ROOT / "monitor" / "templates"
    templates = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    shipped = sorted({p.relative_to(root).as_posix() for pattern in patterns for p in (ROOT / "monitor").glob(pattern)})
    assert templates == shipped
    assert {"base.html", "charts.html", "compare.html", "report.html", "console/base.html"} <= set(shipped)
