"""Live scoring in a real `predstore serve --live-scoring` process, through `predstore.Client`, on a
private PostgreSQL server that stops and starts again: answers go on, and every live prediction is
recorded once the database is back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from predstore import Client
from store.db import stop_embedded
from store.settings import Settings
from tests import factories
from tests.conftest import interruptible
from tests.helpers import REPO, eventually, free_port

if TYPE_CHECKING:
    from tests.conftest import PrivateServer

COLUMNS = ["entity_id", *factories.FEATURES, "color"]


def test_a_live_scoring_server_answers_through_a_database_restart_and_records_everything(
        tmp_path: Path, private_server: PrivateServer, private_database: str) -> None:
    url = private_database
    server = None
    try:
        settings = Settings(home=tmp_path / "home", database_url=url)
        artifact, train = factories.boosted_pipeline(tmp_path / "m")
        register_model(settings, artifact, name="churn", train_data=train, target="y")
        data = factories.frame(200)
        path = factories.write_parquet(tmp_path / "p.parquet", data.iloc[:100])
        assert score_partition(settings, ScoreRequest(path=path, model_name="churn", partition_key="p")).status \
            == "published"
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "PREDSTORE_HOME": str(settings.home), "PREDSTORE_DATABASE_URL": url,
               "PREDSTORE_API_REQUIRE_KEY": "false", "PREDSTORE_API_POOL_TIMEOUT": "0.5"}
        server = subprocess.Popen([sys.executable, "-m", "store", "serve", "--port", str(port), "--workers", "1",
                                   "--live-scoring"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
        client = Client(f"http://127.0.0.1:{port}", retries=0)
        assert eventually(lambda: _answers(client), attempts=300, pause=0.1), "the server did not start"

        mixed = client.predictions("churn", rows=data[COLUMNS].iloc[50:150], on_miss="score")
        sources = [p["source"] for p in mixed["predictions"]]
        assert sources == ["precomputed"] * 50 + ["live"] * 50 and mixed["missing"] == []
        with psycopg.connect(url) as conn:
            batch = dict(conn.execute("SELECT entity_id, prediction FROM current_predictions").fetchall())
        live = client.score("churn", data[COLUMNS].iloc[:100])["predictions"]
        assert {p["entity_id"]: p["prediction"] for p in live} == batch  # the batch run's values, to the bit

        assert stop_embedded(private_server.pgdata)
        during = client.score("churn", data[COLUMNS].iloc[150:])  # the loaded model answers on its own
        assert [p["source"] for p in during["predictions"]] == ["live"] * 50
        time.sleep(1.5)  # the recorder tries, and keeps what it holds
        private_server.restart()

        def recorded() -> int:
            try:
                with psycopg.connect(url) as conn:
                    return int(conn.execute("SELECT count(*) FROM live_predictions").fetchone()[0])  # type: ignore[index]
            except psycopg.OperationalError:
                return -1

        assert eventually(lambda: recorded() == 50 + 100 + 50, attempts=300, pause=0.1), recorded()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(DISTINCT entity_id) FROM live_predictions WHERE entity_id = ANY(%s)",
                                [[f"e{i}" for i in range(150, 200)]]).fetchone() == (50,)  # scored while down
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            output, _ = server.communicate(timeout=30)
            assert "Traceback" not in output, output


def _answers(client: Client) -> bool:
    try:
        client.models()
        return True
    except Exception:  # not listening yet
        return False
