"""Partitions and model artifacts on object storage, against a real S3-compatible HTTP server.

The server is moto's standalone one, started here on a free port; predstore reaches it the way it
reaches AWS, through the provider's standard environment (``AWS_ENDPOINT_URL_S3``, keys). The
test data is written with boto3, as a producer outside predstore would write it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from batch.runner import ScoreRequest, score_partition, verify_run
from lookup_api import close_app, create_app
from models.artifacts import load_model
from models.register import register_model
from predstore.cli import main
from store.errors import ModelError
from store.settings import Settings
from tests import factories

SECRET = "s3cr3t-never-shown"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A boto3 client on a fresh bucket (``s3.bucket``), with the AWS environment pointing at the server."""
    for name, value in {"AWS_ACCESS_KEY_ID": "predstore-test", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    client = boto3.client("s3")
    client.bucket = f"predstore-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=client.bucket)
    return client


def put_parquet(s3: Any, key: str, data: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    data.to_parquet(buffer, index=False, row_group_size=150)
    s3.put_object(Bucket=s3.bucket, Key=key, Body=buffer.getvalue())


@pytest.fixture
def churn(settings: Settings, tmp_path: Path) -> Path:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    return artifact


def test_a_hive_partition_on_s3_is_scored_served_and_verified(
        s3: Any, churn: Path, settings: Settings, cli_env: dict[str, str], conn: psycopg.Connection,
        caplog: pytest.LogCaptureFixture) -> None:
    data = factories.frame(400, seed=3)
    prefix = "incoming/dt=2026-11-26"
    put_parquet(s3, f"{prefix}/part-0.parquet", data[:250])
    put_parquet(s3, f"{prefix}/part-1.parquet", data[250:])
    s3.put_object(Bucket=s3.bucket, Key=f"{prefix}/_SUCCESS", Body=b"")  # a marker, not data
    runner = CliRunner()

    scored = runner.invoke(main, ["score", f"s3://{s3.bucket}/{prefix}/", "--model", "churn", "--json"], env=cli_env)
    assert scored.exit_code == 0, scored.output
    summary = json.loads(scored.output)
    assert (summary["status"], summary["partition"], summary["rows_in"], summary["rows_scored"]) == \
        ("published", "dt=2026-11-26", 400, 400)
    assert conn.execute("SELECT input_uri FROM runs WHERE run_id = %s", [summary["run_id"]]).fetchone() == \
        (f"s3://{s3.bucket}/{prefix}",)

    app = create_app(settings)
    try:
        assert app.extensions["predstore"].listener.connected.wait(10)
        client = app.test_client()
        expected = joblib.load(churn).predict_proba(data[factories.FEATURES])[:, 1]
        for i in (0, 249, 250, 399):
            body = client.get(f"/v1/models/churn/predictions/e{i}").get_json()
            assert body["partition"] == "dt=2026-11-26" and body["run_id"] == summary["run_id"]
            assert body["prediction"] == pytest.approx(expected[i])
    finally:
        close_app(app)

    verified = runner.invoke(main, ["runs", "verify", str(summary["run_id"])], env=cli_env)
    assert verified.exit_code == 0 and "verified: 400 rows re-scored" in verified.output, verified.output
    assert SECRET not in scored.output + verified.output + caplog.text


def downloads(caplog: pytest.LogCaptureFixture, s3: Any, prefix: str) -> list[str]:
    """The objects under ``prefix`` that the server was asked for (listings are not downloads)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "werkzeug" and f"GET /{s3.bucket}/{prefix}" in r.getMessage()]


def test_an_unchanged_object_is_skipped_and_a_changed_one_rescored(s3: Any, churn: Path, settings: Settings,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="werkzeug")  # the server's request log
    data = factories.frame(300, seed=4)
    key = "daily/dt=2026-11-27.csv"
    s3.put_object(Bucket=s3.bucket, Key=key, Body=data.to_csv(index=False).encode())
    request = ScoreRequest(path=f"s3://{s3.bucket}/{key}", model_name="churn")

    first = score_partition(settings, request)
    assert (first.status, first.partition, first.rows_scored) == ("published", "dt=2026-11-27", 300)
    # Written again with the same bytes: a new modification time, the same ETag, nothing to do,
    # and nothing downloaded to find that out.
    s3.put_object(Bucket=s3.bucket, Key=key, Body=data.to_csv(index=False).encode())
    caplog.clear()
    again = score_partition(settings, request)
    assert again.status == "skipped" and "already published" in again.message
    assert downloads(caplog, s3, "daily/") == []

    changed = data.assign(f0=data.f0 + 1.0)
    s3.put_object(Bucket=s3.bucket, Key=key, Body=changed.to_csv(index=False).encode())
    rescored = score_partition(settings, request)
    assert (rescored.status, rescored.superseded_run) == ("published", first.run_id)
    assert downloads(caplog, s3, "daily/")  # read to be scored, as it had to be
    assert verify_run(settings, rescored.run_id or 0)["match"]


def test_an_arrival_job_on_an_s3_prefix_scores_each_partition_once(
        s3: Any, churn: Path, tmp_path: Path, cli_env: dict[str, str], conn: psycopg.Connection,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="werkzeug")
    config = tmp_path / "schedule.toml"
    config.write_text(f"""
[jobs.arrive]
kind = "score"
model = "churn"
input = "s3://{s3.bucket}/events/dt=*"
on_arrival = true
poll_interval = 0.2
""")
    for day in (1, 2):
        put_parquet(s3, f"events/dt=2026-11-0{day}/part-0.parquet", factories.frame(200, seed=day))
    s3.put_object(Bucket=s3.bucket, Key="events/dt=2026-11-03/_temporary/part-0.parquet", Body=b"half-written")
    runner = CliRunner()

    def once() -> list[tuple[str, str]]:
        result = runner.invoke(main, ["schedule", "--config", str(config), "--once"], env=cli_env)
        assert result.exit_code == 0, result.output
        return conn.execute("SELECT partition_key, status FROM runs ORDER BY run_id").fetchall()

    assert once() == [("dt=2026-11-01", "published"), ("dt=2026-11-02", "published")]
    caplog.clear()
    assert len(once()) == 2  # nothing new: no run, not even a skipped one
    put_parquet(s3, "events/dt=2026-11-03/part-0.parquet", factories.frame(200, seed=3))
    assert once()[2:] == [("dt=2026-11-03", "published")]
    # Each pass is a fresh process state: what was scored is recognised from listings alone.
    assert downloads(caplog, s3, "events/") and not [
        line for line in downloads(caplog, s3, "events/") if "dt=2026-11-03" not in line]


def test_artifacts_are_stored_in_and_loaded_from_s3(s3: Any, settings: Settings, tmp_path: Path) -> None:
    remote = dataclasses.replace(settings, artifacts=f"s3://{s3.bucket}/models/")
    artifact, train = factories.logistic(tmp_path / "m")
    version = register_model(remote, artifact, name="churn", train_data=train, target="y")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert keys == [f"models/{version.sha256}.joblib"]
    assert version.artifact_uri == f"s3://{s3.bucket}/models/{version.sha256}.joblib"
    assert not (settings.home / "artifacts").exists()

    data = factories.frame(200, seed=5)
    path = factories.write_parquet(tmp_path / "day.parquet", data)
    assert score_partition(remote, ScoreRequest(path=path, model_name="churn")).status == "published"

    s3.put_object(Bucket=s3.bucket, Key=keys[0], Body=artifact.read_bytes() + b"tampered")
    with pytest.raises(ModelError, match="has changed since it was registered"):
        load_model(version.artifact_uri, version.sha256, version.format)


def test_a_file_uri_is_the_same_partition_as_its_path(churn: Path, settings: Settings, tmp_path: Path) -> None:
    path = factories.write_parquet(tmp_path / "in" / "day.parquet", factories.frame(100, seed=6))
    first = score_partition(settings, ScoreRequest(path=path.as_uri(), model_name="churn"))
    again = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert (first.status, again.status, first.partition) == ("published", "skipped", "day")


@pytest.mark.parametrize(("where", "exit_code", "said"), [
    ("s3://predstore-no-such-bucket/incoming/dt=1/", 2, "the bucket 'predstore-no-such-bucket' does not exist"),
    ("s3://{bucket}/nothing/here/", 2, "no such object or prefix"),
    ("s3://{bucket}/empty/", 1, "the prefix holds no .parquet files"),
    ("s3:///incoming/", 2, "Missing bucket name"),
    ("nosuchscheme://{bucket}/x", 2, "unknown scheme"),
    ("s3://AKIA:" + SECRET + "@{bucket}/x/", 2, "credentials in a URI are refused"),
])
def test_a_bad_location_is_one_line(s3: Any, churn: Path, cli_env: dict[str, str], where: str, exit_code: int,
                                    said: str) -> None:
    s3.put_object(Bucket=s3.bucket, Key="empty/notes.txt", Body=b"no data here")
    result = CliRunner().invoke(main, ["score", where.format(bucket=s3.bucket), "--model", "churn"], env=cli_env)
    lines = result.output.strip().splitlines()
    assert result.exit_code == exit_code and len(lines) == 1 and said in lines[0], result.output
    assert "Traceback" not in result.output and SECRET not in result.output


def test_predictions_match_between_s3_and_local_reading(s3: Any, churn: Path, settings: Settings, tmp_path: Path,
                                                        conn: psycopg.Connection) -> None:
    data = factories.frame(500, seed=7)
    put_parquet(s3, "same/dt=x/part-0.parquet", data)
    local = factories.write_parquet(tmp_path / "dt=y" / "part-0.parquet", data, row_group_size=150).parent
    remote_run = score_partition(settings, ScoreRequest(path=f"s3://{s3.bucket}/same/dt=x", model_name="churn"))
    local_run = score_partition(settings, ScoreRequest(path=local, model_name="churn"))
    digests = dict(conn.execute("SELECT partition_key, predictions_digest FROM runs WHERE status = 'published'"))
    assert (remote_run.rows_scored, local_run.rows_scored) == (500, 500)
    assert digests["dt=x"] == digests["dt=y"] and np.isfinite(remote_run.rows_per_s)


def test_labels_are_ingested_from_s3(s3: Any, churn: Path, settings: Settings, cli_env: dict[str, str],
                                     conn: psycopg.Connection, tmp_path: Path) -> None:
    data = factories.frame(300, seed=4)
    local = factories.write_parquet(tmp_path / "p.parquet", data.drop(columns=["y"]))
    assert score_partition(settings, ScoreRequest(path=local, model_name="churn")).status == "published"
    put_parquet(s3, "labels/2026-11-27.parquet", data[["entity_id", "y"]].iloc[:200])
    runner = CliRunner()
    uri = f"s3://{s3.bucket}/labels/2026-11-27.parquet"
    first = runner.invoke(main, ["labels", "ingest", uri, "--model", "churn", "--entity-col", "entity_id",
                                 "--label-col", "y"], env=cli_env)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("2026-11-27.parquet -> churn: 200 rows read, 200 new"), first.output
    # without --time-col the labels happened when the object was written (its Last-Modified)
    modified = s3.head_object(Bucket=s3.bucket, Key="labels/2026-11-27.parquet")["LastModified"]
    assert conn.execute("SELECT DISTINCT event_time FROM labels").fetchall() == [(modified,)]
    again = runner.invoke(main, ["labels", "ingest", uri, "--model", "churn", "--entity-col", "entity_id",
                                 "--label-col", "y", "--json"], env=cli_env)
    assert again.exit_code == 0 and json.loads(again.output)["unchanged"] == 200, again.output
    missing = runner.invoke(main, ["labels", "ingest", f"s3://{s3.bucket}/labels/none.parquet", "--model", "churn",
                                   "--entity-col", "entity_id", "--label-col", "y"], env=cli_env)
    assert missing.exit_code != 0 and len(missing.output.strip().splitlines()) == 1, missing.output
    assert "none.parquet" in missing.output and SECRET not in missing.output


def test_a_training_set_is_written_to_s3(s3: Any, churn: Path, settings: Settings, cli_env: dict[str, str],
                                         tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from monitor.labels import ingest_labels
    from monitor.runner import run_monitor

    data = factories.frame(200, seed=5)
    local = factories.write_parquet(tmp_path / "p.parquet", data.drop(columns=["y"]))
    assert score_partition(settings, ScoreRequest(path=local, model_name="churn")).status == "published"
    labels = factories.write_parquet(tmp_path / "l.parquet", data[["entity_id", "y"]].assign(
        event_time=datetime.now(UTC) + timedelta(minutes=1)))
    ingest_labels(settings, labels, model_name="churn", entity_col="entity_id", label_col="y", time_col="event_time")
    run_monitor(settings, "churn")
    uri = f"s3://{s3.bucket}/sets/churn.parquet"
    done = CliRunner().invoke(main, ["training-set", "churn", "--out", uri], env=cli_env)
    assert done.exit_code == 0, done.output
    body = s3.get_object(Bucket=s3.bucket, Key="sets/churn.parquet")["Body"].read()
    written = pd.read_parquet(io.BytesIO(body))
    assert len(written) == 200 and set(written["entity_id"]) == set(data["entity_id"])
