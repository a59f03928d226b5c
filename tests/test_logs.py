"""Logs: every predstore logger under ``predstore.``, PREDSTORE_LOG_LEVEL and PREDSTORE_LOG_FORMAT
for the CLI, the scheduler and the servers, one JSON object per line, and never a password."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from predstore.cli import main
from store import logs
from store.settings import Settings
from tests.test_scheduler import arrival_job, model, write_partition  # noqa: F401 (model: a fixture)

SECRET = "s3cret-Pw"
KEYS = {"time", "level", "logger", "message"}


def test_a_scheduler_pass_logs_one_json_object_per_line(model: str, tmp_path: Path,  # noqa: F811
                                                        cli_env: dict[str, str]) -> None:
    write_partition(tmp_path / "incoming", "good", seed=1)
    write_partition(tmp_path / "incoming", "bad", seed=2, columns=("x1",))  # x2 is missing: retried, then failed
    done = subprocess.run([sys.executable, "-m", "store", "schedule", "--config",
                           str(arrival_job(tmp_path, model, retries=1, backoff=0.1)), "--once"],
                          env={**cli_env, "PREDSTORE_LOG_FORMAT": "json"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line, or this fails
    assert lines and all(KEYS <= set(line) for line in lines)
    assert all(line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for line in lines)
    assert all(line["time"].endswith("+00:00") for line in lines)
    ours = {line["logger"] for line in lines if line["logger"].startswith("predstore.")}
    assert "predstore.scheduler.jobs" in ours
    assert lines[-1] == {**lines[-1], "level": "ERROR", "logger": "predstore.cli",
                         "message": "1 of 1 jobs failed: arrive; the log above and `predstore jobs` say why"}
    assert any(line["level"] == "WARNING" and "bad attempt 1 of 2 failed" in line["message"] for line in lines)
    jobs = [line for line in lines if line["logger"] == "predstore.scheduler.jobs"]
    assert jobs and all((line["job_id"], line["model"]) == ("arrive", model) for line in jobs)
    runs = {line["partition"]: line for line in jobs if "partition" in line}  # the outcome of each partition
    assert set(runs) == {"good", "bad"} and isinstance(runs["good"]["run_id"], int), runs


def test_text_lines_carry_time_level_and_logger(model: str, tmp_path: Path,  # noqa: F811
                                                cli_env: dict[str, str]) -> None:
    config = arrival_job(tmp_path, model)
    write_partition(tmp_path / "incoming", "first", seed=1)
    done = subprocess.run([sys.executable, "-m", "store", "schedule", "--config", str(config), "--once"],
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr
    for line in done.stderr.splitlines():
        date, _, level, logger, _ = line.split(" ", 4)
        assert len(date) == 10 and level in ("INFO", "WARNING") and logger.startswith("predstore."), line
    assert " INFO predstore.scheduler.jobs: job arrive fired (new data: first in " in done.stderr
    write_partition(tmp_path / "incoming", "second", seed=2)
    done = subprocess.run([sys.executable, "-m", "store", "schedule", "--config", str(config), "--once"],
                          env={**cli_env, "PREDSTORE_LOG_LEVEL": "warning"}, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")  # a pass that went well says nothing at WARNING


@pytest.mark.parametrize(("name", "value", "choices"), [
    ("PREDSTORE_LOG_LEVEL", "loud", "info, debug, warning, error, critical"),
    ("PREDSTORE_LOG_FORMAT", "xml", "text, json"),
])
def test_a_bad_log_setting_is_one_line_and_exit_2(name: str, value: str, choices: str) -> None:
    result = CliRunner().invoke(main, ["db", "url"], env={name: value})
    assert (result.exit_code, result.output) == (2, f"predstore: error: {name}={value!r} is not one of {choices}\n")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_line_shows_a_password(log_format: str, tmp_path: Path) -> None:
    url = f"postgresql://predstore:{SECRET}@127.0.0.1:9/predstore"  # nothing listens on port 9
    env = {"PREDSTORE_DATABASE_URL": url, "PREDSTORE_LOG_FORMAT": log_format, "PREDSTORE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "store", "-v", "runs", "list"], env={**_clean_env(), **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "predstore@127.0.0.1:9/predstore" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    if log_format == "json":
        assert [json.loads(line)["level"] for line in done.stderr.splitlines()][-1] == "ERROR"


def test_the_formatters_mask_passwords_and_carry_what_is_known() -> None:
    record = logging.LogRecord("predstore.batch.runner", logging.WARNING, __file__, 1,
                               "connecting to %s", (f"postgresql://u:{SECRET}@db/x",), None)
    with logs.context(model="churn", job_id="arrive"), logs.context(run_id=7, partition=None):
        line = json.loads(logs.JsonFormatter().format(record))
    assert line == {"time": line["time"], "level": "WARNING", "logger": "predstore.batch.runner",
                    "message": "connecting to postgresql://u:***@db/x", "model": "churn", "job_id": "arrive",
                    "run_id": 7}
    record.partition = "2026-11-25"  # as extra={"partition": ...} sets it
    assert json.loads(logs.JsonFormatter().format(record))["partition"] == "2026-11-25"
    assert "model" not in json.loads(logs.JsonFormatter().format(record))  # outside the block
    try:
        raise RuntimeError(f"password={SECRET}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        text = formatter.format(record)
        assert SECRET not in text and "password=***" in text


def test_servers_get_the_same_lines() -> None:
    settings = Settings(log_level="warning", log_format="json")
    config = logs.dict_config(settings, servers=True)
    assert config["root"] == {"level": "WARNING", "handlers": ["stderr"]}
    for name in ("gunicorn.error", "_granian"):
        assert config["loggers"][name] == {"level": "WARNING", "handlers": [], "propagate": True}
    assert logs.dict_config(settings, verbose=True)["root"]["level"] == "DEBUG"
    assert "gunicorn.error" not in logs.dict_config(settings)["loggers"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
