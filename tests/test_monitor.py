"""The monitor job against a real PostgreSQL: drift per run, alerts once, the webhook, the report,
the commands and their exit codes, and what the scheduler gets back."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from monitor.config import MonitorConfig, from_toml
from monitor.labels import ingest_labels
from monitor.runner import run_monitor, write_report
from predstore.cli import main
from scheduler.hooks import alerts_of
from store import ConfigError, NotFound, Settings
from store.cli import exit_code
from tests import factories
from tests.helpers import bare_env

QUIET = MonitorConfig()  # no webhook, whatever the environment says


@pytest.fixture
def scored(settings: Settings, tmp_path: Path) -> dict[str, int]:
    """A classifier with a baseline, one run like its training data and one shifted run."""
    artifact, train = factories.pipeline_classifier(tmp_path / "m", handle_unknown="ignore")
    register_model(settings, artifact, name="pipe", train_data=train, target="y", baseline_cv=3)
    same = factories.write_parquet(tmp_path / "same.parquet", factories.frame(1500, seed=3))
    shifted = factories.write_parquet(tmp_path / "shifted.parquet", factories.frame(1500, seed=4, start=5000,
                                                                                     shift=0.8))
    runs = {}
    for key, path in (("same", same), ("shifted", shifted)):
        result = score_partition(settings, ScoreRequest(path=path, model_name="pipe"))
        assert result.run_id is not None
        runs[key] = result.run_id
    return runs


def test_drift_is_checked_per_run_recorded_and_alerted_once(settings: Settings, scored: dict[str, int],
                                                            conn: psycopg.Connection) -> None:
    result = run_monitor(settings, "pipe", config=QUIET)
    by_run = {c.run_id: c for c in result.checks}
    assert by_run[scored["same"]].drifted == ()
    assert set(by_run[scored["shifted"]].drifted) == {"f0", "f1", "f2"}
    assert by_run[scored["shifted"]].outputs_drifted  # the predictions moved too
    assert {(a.kind, a.scope) for a in result.alerts} == {("data_drift", f"run:{scored['shifted']}"),
                                                          ("prediction_drift", f"run:{scored['shifted']}")}
    latest = conn.execute("SELECT column_name, drifted, psi, wasserstein FROM latest_drift "
                          "WHERE model_name = 'pipe' AND role = 'feature' ORDER BY column_name").fetchall()
    assert [(r[0], r[1]) for r in latest] == [("color", False), ("f0", True), ("f1", True), ("f2", True)]
    over_time = conn.execute("SELECT count(DISTINCT run_id) FROM drift_over_time WHERE model_name = 'pipe'").fetchone()
    assert over_time == (2,)
    # Estimates before labels, marked as such.
    estimated = [r for r in result.performance if r.estimated]
    assert {r.run_id for r in estimated} == set(scored.values())

    again = run_monitor(settings, "pipe", config=QUIET)
    assert again.checks == () and again.alerts == () and not again.fired
    rechecked = run_monitor(settings, "pipe", run_id=scored["shifted"], config=QUIET)
    assert rechecked.alerts == () and {a.kind for a in rechecked.standing} == {"data_drift", "prediction_drift"}
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (2,)
    # What the scheduler's on_alert hook receives: JSON-able dicts.
    assert [a["kind"] for a in alerts_of(result)] == ["data_drift", "prediction_drift"]
    json.dumps(alerts_of(result))
    explained = alerts_of(result)[0]["details"]  # what a retraining hook needs to know
    assert explained["partitions"] == ["shifted"] and explained["rows"] == 1500
    assert explained["features"] == ["f0", "f1", "f2"] and explained["run_ids"] == [scored["shifted"]]


def test_a_window_of_runs_is_checked_on_the_summed_histograms(settings: Settings, scored: dict[str, int],
                                                              conn: psycopg.Connection) -> None:
    result = run_monitor(settings, "pipe", since=datetime(2000, 1, 1).astimezone(), config=QUIET)
    window = next(c for c in result.checks if c.scope == "window")
    assert sorted(window.run_ids) == sorted(scored.values()) and window.rows == 3000


def test_alerts_are_posted_to_the_webhook_with_retries(settings: Settings, scored: dict[str, int],
                                                       conn: psycopg.Connection) -> None:
    with _receiver(fail_first=1) as received:
        config = MonitorConfig(webhook_url=f"http://127.0.0.1:{received['port']}/hook", webhook_timeout=2,
                               webhook_retries=2)
        result = run_monitor(settings, "pipe", config=config)
    assert len(result.alerts) == 2
    bodies = received["bodies"]
    assert len(bodies) == 3  # the first attempt got a 500 and was retried
    assert {b["kind"] for b in bodies} == {"data_drift", "prediction_drift"} and bodies[-1]["model"] == "pipe"
    rows = conn.execute("SELECT delivered_at IS NOT NULL, delivery_error FROM alerts").fetchall()
    assert rows == [(True, None), (True, None)]


def test_an_unreachable_webhook_is_recorded_not_fatal(settings: Settings, scored: dict[str, int],
                                                      conn: psycopg.Connection) -> None:
    with _receiver(fail_first=0) as received:
        port = received["port"]
    config = MonitorConfig(webhook_url=f"http://127.0.0.1:{port}/gone", webhook_timeout=1, webhook_retries=0)
    result = run_monitor(settings, "pipe", config=config)
    assert result.fired
    errors = [r[0] for r in conn.execute("SELECT delivery_error FROM alerts").fetchall()]
    assert all(errors) and len(errors) == 2


def test_the_report_is_one_self_contained_file(settings: Settings, scored: dict[str, int], tmp_path: Path) -> None:
    run_monitor(settings, "pipe", config=QUIET)
    page = write_report(settings, "pipe", tmp_path / "out" / "report.html").read_text()
    assert page.count("<svg") >= 4  # histograms of the drifted features and the drift share
    assert "Baseline against batch" in page and "f0" in page and "Drift over time" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_the_monitor_command_exits_1_on_an_alert(settings: Settings, scored: dict[str, int],
                                                 cli_env: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    done = subprocess.run(["predstore", "monitor", "--model", "pipe", "--report", str(report)], env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "ALERT data_drift" in done.stdout and "f0" in done.stdout and report.exists()
    runner = CliRunner()
    quiet = runner.invoke(main, ["monitor", "--model", "pipe", "--json"], obj=None, env=cli_env)
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.output)["alerts"] == []
    standing = runner.invoke(main, ["monitor", "--model", "pipe", "--run", str(scored["shifted"])], env=cli_env)
    assert standing.exit_code == 1 and "raised before" in standing.output
    clean = runner.invoke(main, ["monitor", "--model", "pipe", "--run", str(scored["same"])], env=cli_env)
    assert clean.exit_code == 0, clean.output


def test_monitor_errors_are_one_line(settings: Settings, cli_env: dict[str, str]) -> None:
    done = subprocess.run(["predstore", "monitor", "--model", "nope"], env=cli_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "no model named 'nope'" in done.stderr
    with pytest.raises(NotFound):
        run_monitor(settings, "nope", config=QUIET)


def test_profile_a_file_against_the_baseline(settings: Settings, scored: dict[str, int], tmp_path: Path,
                                             cli_env: dict[str, str]) -> None:
    data = factories.frame(2000, seed=9, shift=0.8).drop(columns=["entity_id"])  # no ids needed
    path = factories.write_parquet(tmp_path / "adhoc.parquet", data)
    done = subprocess.run(["predstore", "monitor", "profile", str(path), "--model", "pipe", "--json"], env=cli_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["rows_in"] == 2000 and set(outcome["drifted"]) == {"f0", "f1", "f2"}
    same = factories.write_parquet(tmp_path / "same.parquet", factories.frame(2000, seed=10))
    done = subprocess.run(["predstore", "monitor", "profile", str(same), "--model", "pipe"], env=cli_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "0 of 4 features drifted" in done.stdout


def test_config_file_sets_thresholds_per_feature(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text('alpha = 0.05\nwindow = "day"\n[features.f0]\nwasserstein = [1.0, 2.0]\n')
    config = MonitorConfig.from_env({"PREDSTORE_MONITOR_CONFIG": str(path),
                                     "PREDSTORE_ALERT_WEBHOOK": "http://127.0.0.1:9/x"})
    assert config.drift.limits("f0", "wasserstein") == (1.0, 2.0) and config.drift.limits("f1", "psi") == (0.1, 0.25)
    assert config.window == "day" and config.webhook_url == "http://127.0.0.1:9/x"
    path.write_text("[features.f0]\nwasserstien = [1, 2]\n")
    with pytest.raises(ConfigError, match="unknown metric 'wasserstien'"):
        from_toml(path)


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        state = self.server.state  # type: ignore[attr-defined]
        state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        failing = state["fail_first"] > 0
        state["fail_first"] -= 1
        self.send_response(500 if failing else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _receiver(*, fail_first: int) -> Iterator[dict[str, Any]]:
    """A real HTTP server on 127.0.0.1 recording the JSON POSTed to it; the first ``fail_first``
    requests get a 500."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    state: dict[str, Any] = {"bodies": [], "fail_first": fail_first, "port": server.server_port}
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_database_errors_become_one_line_errors() -> None:
    from monitor.errors import store_errors
    from store import PredstoreError, StoreUnavailable

    url = "postgresql://u:s3cret@db:5432/store"
    with pytest.raises(PredstoreError, match=r"^monitoring m: the database refused it \(duplicate key\)$"):
        with store_errors("monitoring m", conninfo=url):
            raise psycopg.errors.UniqueViolation("duplicate key\nDETAIL: Key (x)=(1) already exists.")
    with pytest.raises(StoreUnavailable, match=r"^monitoring m: database unavailable: lost the connection to "
                                               r"PostgreSQL at u@db:5432/store: server closed") as caught:
        with store_errors("monitoring m", conninfo=url):
            raise psycopg.OperationalError("server closed the connection unexpectedly")
    assert exit_code(caught.value) == 1


def test_a_challenger_is_monitored_beside_the_served_runs_without_alerting(
        settings: Settings, tmp_path: Path, conn: psycopg.Connection) -> None:
    from store import registry

    first, train = factories.pipeline_classifier(tmp_path / "v1", handle_unknown="ignore")
    register_model(settings, first, name="pipe", train_data=train, target="y")
    second, _ = factories.logistic(tmp_path / "v2")
    register_model(settings, second, name="pipe", train_data=train, target="y")
    with conn.transaction():
        registry.set_alias(conn, "pipe", "challenger", 2)
    data = factories.frame(1500, seed=4, shift=0.8)
    scored = score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                                    model_name="pipe"))
    assert scored.challenger is not None and scored.challenger.run_id is not None
    labels = data[["entity_id", "y"]].assign(at=datetime(2026, 1, 5, tzinfo=UTC))
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    ingest_labels(settings, tmp_path / "labels.parquet", model_name="pipe", entity_col="entity_id", label_col="y",
                  time_col="at")
    result = run_monitor(settings, "pipe", config=QUIET)
    roles = {c.run_id: c.run_role for c in result.checks}
    assert roles == {scored.run_id: "current", scored.challenger.run_id: "challenger"}
    assert {a.run_id for a in result.alerts if a.run_id is not None} == {scored.run_id}
    windows = {(r.model_version, r.run_role) for r in result.performance if r.scope == "window"}
    assert windows == {(1, "current"), (2, "challenger")}  # champion against challenger, label by label
    assert result.labels["matched"] == 1500
    latest = conn.execute("SELECT DISTINCT run_id FROM latest_drift WHERE model_name = 'pipe'").fetchall()
    assert latest == [(scored.run_id,)]


def test_a_failed_monitor_run_exits_6_and_an_alert_still_exits_1(settings: Settings, cli_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    closed = bare_env(tmp_path, "postgresql://user:secret@127.0.0.1:1/store")
    done = subprocess.run(["predstore", "monitor", "--model", "churn"], env=closed, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 6, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "database unavailable" in done.stderr, done.stderr
    assert "secret" not in done.stderr

    artifact, train = factories.pipeline_classifier(tmp_path / "m", handle_unknown="ignore")
    register_model(settings, artifact, name="pipe", train_data=train, target="y", baseline_cv=3)
    shifted = factories.write_parquet(tmp_path / "shifted.parquet",
                                      factories.frame(1500, seed=4, start=5000, shift=0.8))
    assert score_partition(settings, ScoreRequest(path=shifted, model_name="pipe")).status == "published"
    alerted = CliRunner().invoke(main, ["monitor", "--model", "pipe"], env=cli_env)
    assert alerted.exit_code == 1 and "ALERT data_drift" in alerted.output, alerted.output
    unknown = CliRunner().invoke(main, ["monitor", "--model", "nope"], env=cli_env)
    assert unknown.exit_code == 2, unknown.output
