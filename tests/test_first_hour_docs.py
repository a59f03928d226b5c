"""What the guides promise a newcomer in the first hour, checked against the real thing: `runs
verify` after `predstore forget` says why it fails, the audit names the operating-system user
whatever made the change, a second `predstore serve` on a port in use is refused, the example
schedule runs after the demo, and errors from Python name keyword arguments and frames.

(The lookup API cell of docs/python.md, with its key, runs in tests/test_python_api.py.)
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

import predstore
from batch.runner import ScoreRequest, score_partition, verify_run
from models.register import register_model
from store import ConfigError, InputError, RunFailed
from store.forget import forget_entity
from store.settings import Settings
from tests import factories
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def predstore_command(*args: str, env: dict[str, str], cwd: Path = REPO,
                      timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "predstore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_verify_after_forget_says_the_erasure_is_why(settings: Settings, cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    """docs/scoring.md (Reproducibility) and docs/security.md (forget) say the same: a run that held
    an erased entity does not verify, and `runs verify` says so, counting the entities erased."""
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(50, seed=1))
    before = score_partition(settings, ScoreRequest(path=path, model_name="churn"))
    assert verify_run(settings, before.run_id)["match"]

    forget_entity(settings, "e7")
    forget_entity(settings, "e9", model="churn")
    with pytest.raises(InputError, match=r"2 of its entities were erased by `predstore forget`"):
        verify_run(settings, before.run_id)
    done = predstore_command("runs", "verify", str(before.run_id), env=cli_env)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not verify" in lines[0] and "2 of its entities were erased" in lines[0], lines

    # Scored again after the erasure, the run leaves them out as verify does: it verifies.
    after = score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    assert verify_run(settings, after.run_id)["match"]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_a_second_predstore_serve_on_a_port_in_use_is_refused(cli_env: dict[str, str]) -> None:
    """docs/serving.md (A port in use): by default, and with PREDSTORE_API_REUSE_PORT=0, one line
    and exit status 2; the server already there goes on serving."""
    port = free_port()
    first = subprocess.Popen([sys.executable, "-m", "predstore", "serve", "--port", str(port), "--workers", "1"],
                             cwd=REPO, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            if _ready(f"http://127.0.0.1:{port}/healthz"):
                break
            assert first.poll() is None, first.stdout.read() if first.stdout else ""
            time.sleep(0.1)
        for env in (cli_env, {**cli_env, "PREDSTORE_API_REUSE_PORT": "0"}):
            second = subprocess.Popen([sys.executable, "-m", "predstore", "serve", "--port", str(port),
                                       "--workers", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            try:
                out, err = second.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                second.send_signal(signal.SIGINT)
                second.communicate(timeout=30)
                pytest.fail(f"a second `predstore serve` on port {port} started beside the first")
            assert second.returncode == 2, (out, err)
            assert err.strip().splitlines() == [f"predstore: error: port {port} on 127.0.0.1 is already in use "
                                                "(another `predstore serve`?): stop what listens there or pick "
                                                "another --port; PREDSTORE_API_REUSE_PORT=1 shares the port with "
                                                "it instead"], err
        assert first.poll() is None and _ready(f"http://127.0.0.1:{port}/healthz")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def test_the_example_schedule_runs_after_the_demo(cli_env: dict[str, str], tmp_path: Path) -> None:
    """schedule.example.toml runs as its header says: `predstore demo`, then `predstore schedule
    --config schedule.example.toml --once`, both in the folder that holds it (a checkout's root;
    a copy here, so the test writes nothing into the checkout), with the default PREDSTORE_HOME."""
    shutil.copy(REPO / "schedule.example.toml", tmp_path)
    env = {k: v for k, v in cli_env.items() if k != "PREDSTORE_HOME"}  # ./.predstore, as a newcomer has it
    demo = predstore_command("demo", "--weeks", "1", env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    done = predstore_command("schedule", "--config", "schedule.example.toml", "--once", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "score-incoming" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr


@pytest.fixture
def notebook(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The first cell of docs/python.md run against the test's store: ``train``, ``model``..."""
    from tests.test_python_api import example_cells

    monkeypatch.setenv("PREDSTORE_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("PREDSTORE_HOME", str(settings.home))
    namespace: dict[str, Any] = {}
    exec(compile(example_cells()[0], "docs/python.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace


def test_the_python_api_audits_the_operating_system_user(notebook: dict[str, Any],
                                                         conn: psycopg.Connection) -> None:
    """docs/security.md: the audit's actor is the operating-system user, from Python as from the CLI."""
    rows = conn.execute("SELECT actor, target FROM audit WHERE action = 'model.register'").fetchall()
    assert rows == [(getpass.getuser(), "churn v1")]


def test_a_missing_entity_column_is_named_as_entity_col(notebook: dict[str, Any]) -> None:
    """docs/python.md: frames in, frames out; an error names the keyword, not a temporary file."""
    frame = notebook["train"].drop(columns=["churned"]).assign(account=[f"a{i}" for i in range(2_000)])
    with pytest.raises(RunFailed) as raised:
        predstore.score(frame, model="churn", entity_col="customer_number")
    message = str(raised.value)
    assert "'customer_number'" in message and "entity_col=" in message, message
    assert "--entity-col" not in message and "predstore-" not in message and ".parquet" not in message, message
    assert raised.value.run_id is not None  # the same error, its run with it


def test_a_missing_target_column_is_named_as_target(notebook: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        predstore.register(notebook["model"], name="churn2", train=notebook["train"], target="churn")
    assert str(raised.value) == "target='churn' is not a column of the frame passed as train="
    with pytest.raises(ConfigError) as raised:
        predstore.register(notebook["model"], name="churn2", train=notebook["train"], target="churned",
                           validation=notebook["held_out"].drop(columns=["churned"]))
    assert str(raised.value) == "target='churned' is not a column of the frame passed as validation="


def test_errors_of_a_path_keep_the_path(notebook: dict[str, Any], tmp_path: Path) -> None:
    """A file the caller named is theirs to see; only its flags become keywords."""
    path = tmp_path / "train.parquet"
    notebook["train"].to_parquet(path)
    with pytest.raises(ConfigError) as raised:
        predstore.register(notebook["model"], name="churn2", train=str(path), target="churn")
    assert str(raised.value) == f"target='churn' is not a column of {path}"
