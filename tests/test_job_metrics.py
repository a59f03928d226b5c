"""Jobs leave their figures for Prometheus: a textfile-collector file and a Pushgateway push per model
and role (scoring), per model (the monitor) and per scheduler host; the time of the last success
survives a failure."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import psycopg
import pytest

from batch.runner import ScoreRequest, score_partition
from lookup_api.metrics import make_metrics
from models.register import register_model
from monitor.runner import run_monitor
from scheduler.config import load_config
from scheduler.daemon import run_once
from scheduler.metrics import SchedulerMetrics
from store import RunFailed, Settings, StoreUnavailable, registry
from tests import factories


def test_a_run_writes_its_figures_for_the_textfile_collector_and_the_pushgateway(settings: Settings,
                                                                                 tmp_path: Path) -> None:
    pushed: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
            pushed.append(("PUT", self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configured = dataclasses.replace(settings, metrics_dir=tmp_path / "textfiles",
                                         pushgateway_url=f"http://127.0.0.1:{server.server_port}")
        artifact, train = factories.logistic(tmp_path / "m")
        register_model(configured, artifact, name="churn", train_data=train, target="y")
        path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(300))
        score_partition(configured, ScoreRequest(path=path, model_name="churn"))
    finally:
        server.shutdown()
        server.server_close()
    text = (tmp_path / "textfiles" / "predstore_score_churn_current.prom").read_text()
    labels = 'model="churn",role="current",status="published"'
    assert f"predstore_score_rows_in{{{labels}}} 300.0" in text
    assert f"predstore_score_success{{{labels}}} 1.0" in text
    assert "predstore_score_finished_timestamp_seconds" in text
    assert "partition" not in text  # a label per partition would grow without bound
    success = (tmp_path / "textfiles" / "predstore_score_last_success_churn_current.prom").read_text()
    assert 'predstore_score_last_success_timestamp_seconds{model="churn",role="current"}' in success
    assert [(method, path) for method, path, _ in pushed] == [
        ("PUT", "/metrics/job/predstore_score/model/churn/role/current"),
        ("PUT", "/metrics/job/predstore_score_last_success/model/churn/role/current")]
    assert b"predstore_score_rows_scored" in pushed[0][2]


def test_an_unreachable_pushgateway_does_not_fail_the_run(settings: Settings, tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, pushgateway_url="http://127.0.0.1:9")
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(configured, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(50))
    assert score_partition(configured, ScoreRequest(path=path, model_name="churn")).status == "published"


def figures(path: Path) -> dict[str, float]:
    """The samples of a textfile, by metric name and labels."""
    samples = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_a_challenger_has_figures_of_its_own_and_a_failure_keeps_the_last_success(settings: Settings,
                                                                                  tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, metrics_dir=tmp_path / "textfiles")
    for version, seed in ((1, 0), (2, 1)):
        artifact, train = factories.logistic(tmp_path / f"m{version}", seed=seed)
        register_model(configured, artifact, name="churn", train_data=train, target="y")
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        registry.set_alias(conn, "churn", "challenger", 2)
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(200))
    score_partition(configured, ScoreRequest(path=path, model_name="churn"))
    current = figures(tmp_path / "textfiles" / "predstore_score_churn_current.prom")
    challenger = figures(tmp_path / "textfiles" / "predstore_score_churn_challenger.prom")
    assert current['predstore_score_rows_scored{model="churn",role="current",status="published"}'] == 200
    assert challenger['predstore_score_rows_scored{model="churn",role="challenger",status="published"}'] == 200
    succeeded = figures(tmp_path / "textfiles" / "predstore_score_last_success_churn_current.prom")

    bad = factories.frame(100, seed=5)
    bad.loc[:49, "f0"] = np.inf
    with pytest.raises(RunFailed):
        score_partition(configured, ScoreRequest(path=factories.write_parquet(tmp_path / "day2.parquet", bad),
                                                 model_name="churn"))
    failed = figures(tmp_path / "textfiles" / "predstore_score_churn_current.prom")
    assert failed['predstore_score_success{model="churn",role="current",status="failed"}'] == 0
    assert not any('status="published"' in series for series in failed)  # the file holds the latest run only
    assert figures(tmp_path / "textfiles" / "predstore_score_last_success_churn_current.prom") == succeeded


def test_the_monitor_exports_drift_share_alerts_and_its_last_success(settings: Settings, tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, metrics_dir=tmp_path / "textfiles")
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(configured, artifact, name="churn", train_data=train, target="y")
    shifted = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(2000, seed=3, shift=1.5))
    score_partition(configured, ScoreRequest(path=shifted, model_name="churn"))
    result = run_monitor(configured, "churn")
    text = figures(tmp_path / "textfiles" / "predstore_monitor_churn.prom")
    assert text['predstore_monitor_drift_share{model="churn"}'] == result.checks[-1].drift_share > 0
    assert text['predstore_monitor_alerts_raised{model="churn"}'] == len(result.alerts) > 0
    assert text['predstore_monitor_success{model="churn"}'] == 1
    success = tmp_path / "textfiles" / "predstore_monitor_last_success_churn.prom"
    assert 'predstore_monitor_last_success_timestamp_seconds{model="churn"}' in figures(success)
    before = success.read_text()

    gone = dataclasses.replace(configured, database_url="postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(StoreUnavailable):
        run_monitor(gone, "churn")
    text = figures(tmp_path / "textfiles" / "predstore_monitor_churn.prom")
    assert text['predstore_monitor_success{model="churn"}'] == 0
    assert 'predstore_monitor_drift_share{model="churn"}' not in text
    assert success.read_text() == before
    with pytest.raises(Exception, match="typo"):
        run_monitor(configured, "typo")  # no such model: no file of its own
    assert not list((tmp_path / "textfiles").glob("*typo*"))


@pytest.fixture
def handlers() -> Iterator[None]:
    """Put back the signal handlers that a `run_once` in this process replaces."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("handlers")
def test_the_scheduler_counts_firings_by_job_and_outcome_and_beats(settings: Settings, tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, metrics_dir=tmp_path / "textfiles")
    artifact, _ = factories.logistic(tmp_path / "m")
    register_model(configured, artifact, name="churn")
    factories.write_parquet(tmp_path / "incoming" / "day1.parquet", factories.frame(50))
    config = tmp_path / "schedule.toml"
    config.write_text('[jobs.arrive]\nkind = "score"\nmodel = "churn"\ninput = "incoming/*.parquet"\n'
                      "on_arrival = true\n")
    run_once(configured, load_config(config))
    (textfile,) = (tmp_path / "textfiles").glob("predstore_scheduler_*.prom")
    first = figures(textfile)
    assert first['predstore_scheduler_firings_total{job_id="arrive",outcome="succeeded"}'] == 1
    assert first['predstore_scheduler_firings_total{job_id="arrive",outcome="failed"}'] == 0
    assert first['predstore_scheduler_firings_total{job_id="retention",outcome="idle"}'] == 1
    assert first["predstore_scheduler_heartbeat_timestamp_seconds"] > 0
    succeeded = first['predstore_scheduler_last_success_timestamp_seconds{job_id="arrive"}']

    run_once(configured, load_config(config))  # a new process: nothing new arrived
    again = figures(textfile)
    assert again['predstore_scheduler_firings_total{job_id="arrive",outcome="idle"}'] == 1
    beat = "predstore_scheduler_heartbeat_timestamp_seconds"
    assert again[beat] >= first[beat]
    # the last success is read back from the store at start
    last = 'predstore_scheduler_last_success_timestamp_seconds{job_id="arrive"}'
    assert again[last] == pytest.approx(succeeded, abs=2)


def test_scheduler_metrics_publish_per_host_and_count_unknown_outcomes_as_failed(settings: Settings,
                                                                                  tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, metrics_dir=tmp_path)
    metrics = SchedulerMetrics(configured, ["nightly"], host="box-1", clock=lambda: 1000.0,
                               last_success={"nightly": datetime(2026, 1, 1, tzinfo=UTC)})
    metrics.record("nightly", "idle")
    assert not list(tmp_path.glob("*.prom"))  # an idle firing waits for the heartbeat
    metrics.record("nightly", "crashed")
    text = figures(tmp_path / "predstore_scheduler_box-1.prom")
    assert text['predstore_scheduler_firings_total{job_id="nightly",outcome="failed"}'] == 1
    assert text['predstore_scheduler_firings_total{job_id="nightly",outcome="idle"}'] == 1
    assert text['predstore_scheduler_last_success_timestamp_seconds{job_id="nightly"}'] == 1767225600.0
    metrics.record("nightly", "succeeded")
    text = figures(tmp_path / "predstore_scheduler_box-1.prom")
    assert text['predstore_scheduler_last_success_timestamp_seconds{job_id="nightly"}'] == 1000.0
    assert text["predstore_scheduler_heartbeat_timestamp_seconds"] == 1000.0


def test_the_pool_gauge_splits_connections_in_use_and_idle_from_requests_waiting() -> None:
    metrics = make_metrics()
    metrics.pool_stats({"pool_size": 4, "pool_available": 1, "requests_waiting": 3, "pool_min": 4})
    sample = metrics.registry.get_sample_value
    assert sample("predstore_api_pool_connections", {"state": "in_use"}) == 3
    assert sample("predstore_api_pool_connections", {"state": "idle"}) == 1
    assert sample("predstore_api_pool_requests_waiting") == 3
