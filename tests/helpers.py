"""What several test modules share: publishing a run without a model, waiting for another thread,
and talking HTTP to a server the test started."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa

from store import ledger, predictions, registry
from store.features import FeatureSchema

REPO = Path(__file__).resolve().parents[1]

Row = tuple[str, float]


def publish_run(conn: psycopg.Connection, model: str, partition: str, rows: Sequence[Row], *,
                version: int = 1) -> int:
    """Publish ``rows`` (entity id, probability of "yes") as a run of ``model`` ``version`` over
    ``partition``, registering the version (and making it current) if needed. Commits."""
    if conn.execute("SELECT 1 FROM models WHERE name = %s AND version = %s", [model, version]).fetchone() is None:
        registry.insert_model(conn, name=model, version=version, artifact_uri=f"/artifacts/{model}-{version}",
                              sha256="0" * 64, format="joblib", task="classification", feature_schema=FeatureSchema(()),
                              classes=["no", "yes"], training_metrics=None)
        registry.set_alias(conn, model, "current", version)
        conn.commit()
    run_id = ledger.start_run(conn, model_name=model, model_version=version, model_sha256="0" * 64,
                              partition_key=partition, input_uri=f"memory://{partition}", code_version="test",
                              host="test", pid=os.getpid())
    conn.commit()
    predictions.create_run_table(conn, run_id)
    columns = ["entity_id", "row_number", "prediction", "label", "scores"]
    batch = pa.record_batch([[e for e, _ in rows], list(range(len(rows))), [p for _, p in rows],
                             ["yes" if p >= 0.5 else "no" for _, p in rows], [[1 - p, p] for _, p in rows]],
                            schema=predictions.arrow_schema(columns))
    with predictions.copy_predictions(conn, run_id, columns) as write:
        write(batch)
    predictions.index_run_table(conn, run_id)
    ledger.finish_run(conn, run_id, rows_in=len(rows), rows_scored=len(rows))
    predictions.publish(conn, run_id, model_name=model, partition_key=partition)
    conn.commit()
    ledger.release_run(conn, run_id)
    return run_id


def eventually(check: Callable[[], bool], *, attempts: int = 100, pause: float = 0.05) -> bool:
    """Whether ``check`` becomes true within ``attempts`` tries (for things another thread does)."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(pause)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def bare_env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    return {**env, "PREDSTORE_HOME": str(tmp_path / "home"), "PREDSTORE_DATABASE_URL": url}
