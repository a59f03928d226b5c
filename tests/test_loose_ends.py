"""Loose ends: a malformed database URL never shows its password; erased rows do not count toward
--max-reject-fraction; a failed monitor run has an exit status of its own, apart from an alert's;
`apikeys list --json` says each key's state."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from batch.plan import RunResult
from batch.runner import ScoreRequest, score_partition
from batch.stages import check_rejects
from models.register import register_model
from predstore.cli import main
from store.errors import InputError, describe_target, mask_secrets
from store.forget import forget_entity
from store.settings import Settings
from tests import factories

MALFORMED = ["postgresql:/user:secret@host/db", "postgresql:user:secret@host/db", "user:secret@host/db",
             "postgresql:///user:secret@host/db", "postgres://user:sec@ret@host/db", "host=h password=se cret"]


def bare_env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    return {**env, "PREDSTORE_HOME": str(tmp_path / "home"), "PREDSTORE_DATABASE_URL": url}


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_url_is_masked_whatever_its_shape(url: str) -> None:
    quoted = f'missing "=" after "{url}" in connection info string'
    for text in (mask_secrets(quoted, url), describe_target(url)):
        assert "secret" not in text and "sec@" not in text, text
    if " " not in url:  # a URL, masked even where the message does not say which string it quotes
        assert "secret" not in mask_secrets(f"at {url}") and "sec@" not in mask_secrets(f"at {url}")
    # libpq quotes the piece of a keyword string it stopped at: the tail of a password with a space
    assert mask_secrets('missing "=" after "cret" in connection info string', "host=h password=se cret") == \
        'missing "=" after "***" in connection info string'


@pytest.mark.parametrize("url", MALFORMED[:4])
def test_db_status_with_a_malformed_url_prints_no_password(url: str, tmp_path: Path) -> None:
    done = subprocess.run(["predstore", "db", "status"], env=bare_env(tmp_path, url), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "secret" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("predstore: error: "), done.stderr


def test_erased_rows_do_not_count_toward_the_reject_fraction() -> None:
    result = RunResult(status="running", model="m", model_version=1, partition="p", rows_in=100, rows_rejected=12)
    check_rejects(result, 0.05, erased=10)  # 2 bad of the 90 judged
    with pytest.raises(InputError, match=r"7 of 95 rows read were rejected \(not counting 5 erased\)"):
        check_rejects(result, 0.05, erased=5)
    with pytest.raises(InputError, match="12 of 100 rows"):
        check_rejects(result, 0.05)
    check_rejects(RunResult(status="running", model="m", model_version=1, partition="p", rows_in=3,
                            rows_rejected=3), 0.05, erased=3)  # everyone erased: nothing wrong with the input


def test_an_erasure_list_does_not_fail_a_healthy_run(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(200, seed=1))
    assert score_partition(settings, ScoreRequest(path=path, model_name="churn")).status == "published"
    for i in range(20):  # 10% of the partition, twice the default limit
        forget_entity(settings, f"e{i}", model="churn")
    rescored = score_partition(settings, ScoreRequest(path=path, model_name="churn", force=True))
    assert rescored.status == "published", rescored.message
    assert (rescored.rows_in, rescored.rows_scored, rescored.rows_rejected) == (200, 180, 20)


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


def test_apikeys_list_json_says_each_keys_state(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    for name in ("kept", "gone"):
        assert runner.invoke(main, ["apikeys", "create", name], env=cli_env).exit_code == 0
    listed = json.loads(runner.invoke(main, ["apikeys", "list", "--json"], env=cli_env).output)
    gone = next(k["key_id"] for k in listed if k["name"] == "gone")
    assert runner.invoke(main, ["apikeys", "revoke", gone], env=cli_env).exit_code == 0
    listed = json.loads(runner.invoke(main, ["apikeys", "list", "--json"], env=cli_env).output)
    assert {k["name"]: (k["state"], k["revoked_at"] is None) for k in listed} == {
        "kept": ("active", True), "gone": ("revoked", False)}
