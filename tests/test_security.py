"""Security: database roles, API keys scoped to models, trusted artifact formats, the audit trail,
`predstore forget`; and an unwritable or full PREDSTORE_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import joblib
import psycopg
import pytest
import skops.io as sio
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition
from lookup_api import close_app, create_app
from predstore.cli import main
from store import ledger, predictions
from store.settings import Settings
from tests import factories
from tests.helpers import publish_run


def as_role(url: str, role: str) -> str:
    """``url`` logging in as ``role`` (the test server trusts local logins)."""
    swapped = url.replace("://postgres:", f"://{role}:", 1).replace("://postgres@", f"://{role}@", 1)
    assert role in swapped, url
    return swapped


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.fixture
def roles(database_url: str, cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A reader, an analyst and a writer made by `predstore db grant`, dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"h_{kind}_{suffix}" for kind in ("reader", "analyst", "writer")}
    code, output = invoke(cli_env, "db", "grant", "--role", names["reader"], "--analyst-role", names["analyst"],
                          "--writer-role", names["writer"])
    assert code == 0, output
    assert all(f"created role {name}" in output for name in names.values())
    yield names
    with psycopg.connect(database_url, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
            admin.execute(f'DROP OWNED BY "{name}"')
            admin.execute(f'DROP ROLE "{name}"')


def test_roles_read_and_write_what_they_should_and_nothing_else(
        roles: dict[str, str], settings: Settings, database_url: str, conn: psycopg.Connection,
        tmp_path: Path) -> None:
    publish_run(conn, "churn", "p", [(f"e{i}", 0.1 * i) for i in range(5)])
    unpublished = ledger.start_run(conn, model_name="churn", model_version=1, model_sha256="0" * 64,
                                   partition_key="q", input_uri="memory://q", code_version="test", host="test",
                                   pid=os.getpid())
    predictions.create_run_table(conn, unpublished)
    conn.commit()
    secret_table = f"predstore_partitions.run_{unpublished}"
    writes = ["INSERT INTO api_keys (key_id, name, key_hash) VALUES ('x', 'x', 'x')", "DELETE FROM models",
              "UPDATE runs SET status = 'failed'", "CREATE TABLE mine (x int)", "DROP VIEW current_predictions",
              f"INSERT INTO {secret_table} (entity_id, row_number) VALUES ('x', 1)"]
    try:
        with psycopg.connect(as_role(database_url, roles["reader"]), autocommit=True) as reader:
            assert reader.execute("SELECT count(*) FROM current_predictions").fetchone() == (5,)
            reader.execute("SELECT key FROM erasure_key")  # live scoring applies the erasure list
            for forbidden in ["SELECT * FROM predictions", "SELECT * FROM runs", "SELECT * FROM rejected_rows",
                              "SELECT * FROM labels", "SELECT * FROM audit", f"SELECT * FROM {secret_table}",
                              *writes]:
                with pytest.raises(psycopg.Error):
                    reader.execute(forbidden)
        with psycopg.connect(as_role(database_url, roles["analyst"]), autocommit=True) as analyst:
            for allowed in ("run_summary", "runs", "predictions", "rejected_rows", "labels", "audit", "models",
                            "published_predictions"):
                analyst.execute(f"SELECT count(*) FROM {allowed}")
            running = analyst.execute("SELECT count(*) FROM predictions WHERE run_id = %s", [unpublished]).fetchone()
            assert running == (0,)  # its table is not attached: not part of predictions yet
            for forbidden in ["SELECT * FROM api_keys", "SELECT * FROM erasure_key", f"SELECT * FROM {secret_table}",
                              *writes]:
                with pytest.raises(psycopg.Error):
                    analyst.execute(forbidden)
    finally:
        ledger.release_run(conn, unpublished)
        conn.commit()

    # The writer owns the store: the jobs run as it, end to end; it can create no role.
    writer_url = as_role(database_url, roles["writer"])
    artifact, train = factories.logistic(tmp_path / "m")
    as_writer = Settings(home=settings.home, database_url=writer_url)
    from models.register import register_model

    register_model(as_writer, artifact, name="lr", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "d.parquet", factories.frame(50))
    assert score_partition(as_writer, ScoreRequest(path=path, model_name="lr")).status == "published"
    assert score_partition(as_writer, ScoreRequest(path=path, model_name="lr", force=True)).status == "published"
    with psycopg.connect(writer_url, autocommit=True) as writer:
        with pytest.raises(psycopg.Error):
            writer.execute("CREATE ROLE intruder")
    with psycopg.connect(as_role(database_url, roles["reader"]), autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM current_predictions WHERE model_name = 'lr'").fetchone() == (50,)


def test_grant_refused_without_the_right_says_so_in_one_line(roles: dict[str, str], database_url: str,
                                                            cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PREDSTORE_DATABASE_URL": as_role(database_url, roles["analyst"])}
    code, output = invoke(env, "db", "grant", "--role", "h_nobody")
    assert code == 2 and output.count("\n") == 1 and "could not create the roles" in output, output


def test_api_keys_scoped_to_models(settings: Settings, conn: psycopg.Connection, cli_env: dict[str, str]) -> None:
    publish_run(conn, "churn", "p", [("e1", 0.9)])
    publish_run(conn, "fraud", "p", [("e1", 0.2)])
    code, scoped = invoke(cli_env, "apikeys", "create", "checkout", "--model", "churn")
    assert code == 0
    code, everything = invoke(cli_env, "apikeys", "create", "analytics")
    scoped_key, full_key = scoped.splitlines()[0], everything.splitlines()[0]
    app = create_app(settings)
    try:
        client = app.test_client()

        def get(path: str, key: str) -> int:
            return client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code

        assert get("/v1/models/churn/predictions/e1", scoped_key) == 200
        assert get("/v1/models/fraud/predictions/e1", scoped_key) == 403
        assert get("/v1/models/fraud", scoped_key) == 403
        assert client.post("/v1/models/fraud/predictions:batch", json={"entity_ids": ["e1"]},
                           headers={"Authorization": f"Bearer {scoped_key}"}).status_code == 403
        listed = client.get("/v1/models", headers={"Authorization": f"Bearer {scoped_key}"}).get_json()
        assert [m["name"] for m in listed["models"]] == ["churn"]
        assert get("/v1/models/fraud/predictions/e1", full_key) == 200
        assert get("/v1/models/fraud/predictions/e1", "psk_nope_nope") == 403
    finally:
        close_app(app)
    code, output = invoke(cli_env, "apikeys", "list", "--json")
    assert sorted(json.dumps(k["models"]) for k in json.loads(output)) == ['["churn"]', "null"]


def test_scoring_loads_a_skops_model_trusting_only_the_types_reviewed_at_registration(
        cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    hgb, _ = factories.regressor(tmp_path / "r")
    skops_file = tmp_path / "hgb.skops"
    sio.dump(joblib.load(hgb), skops_file)
    trusted = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    assert invoke(cli_env, "models", "register", str(skops_file), "--name", "amount", "--trust-type", trusted)[0] == 0
    partition = factories.write_parquet(tmp_path / "in" / "p.parquet", factories.frame(50))
    score = ["score", str(partition), "--model", "amount", "--entity-col", "entity_id", "--force"]
    assert invoke(cli_env, *score)[0] == 0
    # The stored bytes hold a type the version's reviewed list lacks: loading refuses it.
    conn.execute("UPDATE models SET trusted_types = '{}' WHERE name = 'amount'")
    conn.commit()
    code, output = invoke(cli_env, *score)
    assert code != 0 and "TreePredictor" in output and "Traceback" not in output, output


def test_artifacts_from_outside_must_be_trusted_and_changes_are_audited(
        settings: Settings, cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    code, output = invoke(cli_env, "models", "register", str(artifact), "--name", "churn")
    assert code == 2 and "runs any code it holds" in output and "--trust-joblib" in output
    assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
    code, output = invoke(cli_env, "models", "register", str(artifact), "--name", "churn", "--trust-joblib",
                          "--train-data", str(train))
    assert code == 0, output

    hgb, _ = factories.regressor(tmp_path / "r")
    skops_file = tmp_path / "hgb.skops"
    sio.dump(joblib.load(hgb), skops_file)
    code, output = invoke(cli_env, "models", "register", str(skops_file), "--name", "churn")
    assert code == 2 and "TreePredictor" in output and "--trust-type" in output
    trusted = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    code, output = invoke(cli_env, "models", "register", str(skops_file), "--name", "churn", "--trust-type", trusted)
    assert code == 0 and "version 2" in output, output
    reviewed = conn.execute("SELECT trusted_types FROM models WHERE version = 2").fetchone()
    assert reviewed == ([trusted],)  # what loading version 2 may trust, and no more
    assert invoke(cli_env, "models", "promote", "churn", "2")[0] == 0
    code, key = invoke(cli_env, "apikeys", "create", "svc")
    key_id = key.splitlines()[0].split("_")[1]
    assert invoke(cli_env, "apikeys", "revoke", key_id)[0] == 0

    trail = conn.execute("SELECT action, target, actor, details FROM audit ORDER BY audit_id").fetchall()
    assert [(a, t) for a, t, _, _ in trail] == [
        ("model.register", "churn v1"), ("model.register", "churn v2"), ("model.promote", "churn v2"),
        ("apikey.create", key_id), ("apikey.revoke", key_id)]
    assert all(actor for _, _, actor, _ in trail)
    assert trail[2][3]["before"] == 1


def test_forget_erases_an_entity_everywhere_and_is_audited(
        settings: Settings, cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    secret = "person-42"
    old = publish_run(conn, "churn", "p", [(secret, 0.9), ("other", 0.1)])
    new = publish_run(conn, "churn", "p", [(secret, 0.8), ("other", 0.2)])  # supersedes old, which is kept
    publish_run(conn, "fraud", "p", [(secret, 0.3)])
    pending = ledger.start_run(conn, model_name="churn", model_version=1, model_sha256="0" * 64, partition_key="q",
                               input_uri="memory://q", code_version="test", host="test", pid=os.getpid())
    predictions.create_run_table(conn, pending)
    conn.execute(f"INSERT INTO predstore_partitions.run_{pending} (entity_id, row_number) VALUES (%s, 1)", [secret])
    conn.execute("INSERT INTO rejected_rows (run_id, row_number, entity_id, reason) VALUES (%s, 9, %s, 'x')",
                 [new, secret])
    conn.execute("INSERT INTO labels (model_name, entity_id, event_time, label) VALUES "
                 "('churn', %s, now(), 'yes'), ('fraud', %s, now(), 'no'), ('churn', 'other', now(), 'no')",
                 [secret, secret])
    conn.commit()
    try:
        code, output = invoke(cli_env, "forget", secret, "--model", "churn", "--json")
        assert code == 0, output
        done = json.loads(output)
        assert (done["predictions"], done["labels"], done["rejected_rows"]) == (3, 1, 1)
        assert sorted(done["runs"]) == sorted([old, new, pending])

        def count(sql: str) -> int:
            row = conn.execute(sql, [secret]).fetchone()
            assert row is not None
            return int(row[0])

        assert count("SELECT count(*) FROM predictions WHERE entity_id = %s") == 1  # fraud's, not asked
        assert count(f"SELECT count(*) FROM predstore_partitions.run_{pending} WHERE entity_id = %s") == 0
        assert count("SELECT count(*) FROM labels WHERE entity_id = %s") == 1
        assert conn.execute("SELECT count(*) FROM predictions WHERE entity_id = 'other'").fetchone() == (2,)

        code, output = invoke(cli_env, "forget", secret)
        assert code == 0 and "1 prediction(s) in 1 run(s), 1 label(s)" in output, output
        assert count("SELECT count(*) FROM predictions WHERE entity_id = %s") == 0
        trail = conn.execute("SELECT target, details::text FROM audit WHERE action = 'entity.forget'").fetchall()
        assert len(trail) == 2 and all(secret not in t + d for t, d in trail)  # named by its hash only
        assert invoke(cli_env, "forget", secret, "--model", "ghost")[0] == 2
    finally:
        ledger.release_run(conn, pending)
        conn.commit()


# -- PREDSTORE_HOME that cannot be written ----------------------------------------------------------

def register_cli(env: dict[str, str], artifact: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["predstore", "models", "register", str(artifact), "--name", "churn", "--trust-joblib"],
                          env=env, capture_output=True, text=True, timeout=120)


def assert_refused(done: subprocess.CompletedProcess[str], conn: psycopg.Connection, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predstore: error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert conn.execute("SELECT (SELECT count(*) FROM models) + (SELECT count(*) FROM audit)").fetchone() == (0,)


def test_an_unwritable_home_is_a_clear_error_and_the_store_untouched(
        cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    artifact, _ = factories.logistic(tmp_path / "m")
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    under_file = {**cli_env, "PREDSTORE_HOME": str(a_file / "home")}
    assert_refused(register_cli(under_file, artifact), conn, "cannot write the artifact store", "Not a directory")

    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (root ignores file modes, so nothing else denies it)")
    try:
        assert_refused(register_cli({**cli_env, "PREDSTORE_HOME": str(locked)}, artifact), conn,
                       "cannot write the artifact store", "Operation not permitted")
        embedded = {k: v for k, v in cli_env.items() if k != "PREDSTORE_DATABASE_URL"}
        done = subprocess.run(["predstore", "db", "status"], env={**embedded, "PREDSTORE_HOME": str(locked)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "is not a writable directory" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_a_full_disk_under_home_is_a_clear_error_and_the_store_untouched(
        cli_env: dict[str, str], conn: psycopg.Connection, tmp_path: Path) -> None:
    artifact, _ = factories.regressor(tmp_path / "m")  # about 60 kB
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here to fill")
    try:
        assert_refused(register_cli({**cli_env, "PREDSTORE_HOME": str(mount)}, artifact), conn,
                       "cannot write the artifact store", "No space left on device")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
