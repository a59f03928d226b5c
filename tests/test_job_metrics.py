"""Scoring runs leave their figures for Prometheus: a textfile-collector file and a Pushgateway push."""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from batch.models import register_model
from batch.runner import ScoreRequest, score_partition
from store import Settings
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
    text = (tmp_path / "textfiles" / "predstore_score_churn.prom").read_text()
    labels = 'model="churn",partition="day1",role="current",status="published"'
    assert f"predstore_score_rows_in{{{labels}}} 300.0" in text
    assert f"predstore_score_success{{{labels}}} 1.0" in text
    assert "predstore_score_finished_timestamp_seconds" in text
    assert [(method, path) for method, path, _ in pushed] == [("PUT", "/metrics/job/predstore_score/model/churn")]
    assert b"predstore_score_rows_scored" in pushed[0][2]


def test_an_unreachable_pushgateway_does_not_fail_the_run(settings: Settings, tmp_path: Path) -> None:
    configured = dataclasses.replace(settings, pushgateway_url="http://127.0.0.1:9")
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(configured, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(50))
    assert score_partition(configured, ScoreRequest(path=path, model_name="churn")).status == "published"
