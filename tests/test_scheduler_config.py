"""The schedule file: each kind of bad input refused with file, key and reason; the example parses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from predstore.cli import main
from scheduler.config import load_config, parse_config
from scheduler.hooks import alerts_of, run_hook
from scheduler.jobs import latest_due
from store import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[scheduler]
misfire_grace_time = 60

[jobs.arrive]
kind = "score"
model = "churn"
input = "in/*.parquet"
on_arrival = true
poll_interval = 0.5

[jobs.nightly]
kind = "score"
model = "churn"
input = "in"
cron = "0 2 * * *"
timezone = "Europe/Paris"

[jobs.watch]
kind = "monitor"
model = "churn"
cron = "30 3 * * 1-5"
timezone = "UTC"
on_alert = "cat"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "schedule.toml"
    path.write_text(text)
    return path


def test_a_good_config_parses_into_jobs(folder: Path) -> None:
    config = load_config(write(folder, GOOD))
    assert [j.id for j in config.jobs] == ["arrive", "nightly", "watch"]
    assert config.misfire_grace_time == 60
    arrive, nightly, watch = config.jobs
    assert arrive.on_arrival and arrive.poll_interval == 0.5 and arrive.input == str(folder / "in" / "*.parquet")
    assert nightly.input == str(folder / "in" / "*")  # a folder: each entry is a partition
    assert nightly.trigger().timezone.key == "Europe/Paris"  # type: ignore[attr-defined]
    assert watch.kind == "monitor" and watch.on_alert == "cat" and watch.retries == 2


def test_the_example_config_parses(tmp_path: Path) -> None:
    shutil.copy(REPO / "schedule.example.toml", tmp_path)
    (tmp_path / ".predstore" / "demo" / "incoming").mkdir(parents=True)
    config = load_config(tmp_path / "schedule.example.toml")
    kinds = {(j.kind, j.on_arrival, j.cron is not None) for j in config.jobs}
    assert kinds == {("score", True, False), ("score", False, True), ("monitor", False, True)}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("poll_interval = 0.5", "poll_interval = 0.5\nschedule = 1",
         "jobs.arrive.schedule: unknown key; expected one of backoff, cron, entity_col, gate, input"),
        ("[scheduler]", "[schedular]", "schedular: unknown key; expected one of jobs, scheduler"),
        ('cron = "0 2 * * *"', 'cron = "61 2 * * *"', "jobs.nightly.cron: '61 2 * * *' is not a valid cron expression"),
        ('cron = "0 2 * * *"', 'cron = "every night"', "jobs.nightly.cron: 'every night' is not a valid cron"),
        ('cron = "0 2 * * *"', 'cron = "0 2 1 * 1"', "restricting both day of month and day of week"),
        ('cron = "0 2 * * *"', 'cron = "0 2 * * 8"', "'8' is not a day of the week"),
        ('timezone = "Europe/Paris"', 'timezone = "Europe/Pariss"',
         "jobs.nightly.timezone: 'Europe/Pariss' is not a known IANA time zone"),
        ('timezone = "Europe/Paris"', "", "jobs.nightly.timezone: missing; a cron job needs an IANA time zone"),
        ('input = "in/*.parquet"', "", "jobs.arrive.input: missing; give the input location"),
        ('input = "in/*.parquet"', 'input = "nowhere/*.parquet"', "jobs.arrive.input: the folder"),
        ('kind = "monitor"', 'kind = "train"', "jobs.watch.kind: 'train' is not a job kind"),
        ("on_arrival = true", 'on_arrival = true\ncron = "* * * * *"', "jobs.arrive.cron: give either cron"),
        ("on_arrival = true\npoll_interval = 0.5", "", "jobs.arrive.cron: missing; give a cron expression"),
        ('cron = "0 2 * * *"', 'cron = "0 2 * * *"\npoll_interval = 3', "jobs.nightly.poll_interval: only an"),
        ("poll_interval = 0.5", "poll_interval = -1", "jobs.arrive.poll_interval: -1 is out of range"),
        ('model = "churn"\ncron', 'model = ""\ncron', "jobs.watch.model: must be a non-empty string"),
        ("misfire_grace_time = 60", "misfire_grace_time = 2.5", "scheduler.misfire_grace_time: must be a whole"),
        ("[jobs.watch]", "[jobs.watch]\nretries = true", "jobs.watch.retries: must be a whole number"),
        ("[jobs.watch]", '[jobs."my job"]', "jobs.my job: a job name may hold only letters"),
        ("[jobs.watch]", "[jobs.watch", "not valid TOML: "),
    ],
)
def test_an_invalid_config_is_refused_with_file_key_and_reason(folder: Path, old: str, new: str,
                                                               message: str) -> None:
    assert old in GOOD
    path = write(folder, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_config_without_jobs_or_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobs: no jobs are declared"):
        parse_config({"jobs": {}}, path=tmp_path / "s.toml")
    with pytest.raises(ConfigError, match="s.toml: no such file"):
        load_config(tmp_path / "s.toml")


def test_schedule_refuses_a_bad_config_in_one_line_exit_2(folder: Path, cli_env: dict[str, str]) -> None:
    path = write(folder, GOOD.replace('cron = "0 2 * * *"', 'cron = "0 25 * * *"'))
    done = subprocess.run([sys.executable, "-m", "store", "schedule", "--config", str(path), "--once"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"predstore: error: {path}: jobs.nightly.cron: '0 25 * * *' is not a valid")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_schedule_refuses_an_unregistered_model_before_starting(folder: Path, cli_env: dict[str, str]) -> None:
    path = write(folder, GOOD)
    result = CliRunner().invoke(main, ["schedule", "--config", str(path)], env=cli_env)
    assert result.exit_code == 2
    assert result.output.strip() == (f"predstore: error: {path}: jobs.arrive.model: no model named 'churn' is "
                                     "registered; see `predstore models list`")


def test_latest_due_is_the_last_cron_time_at_or_before_now(folder: Path) -> None:
    nightly = load_config(write(folder, GOOD)).job("nightly")
    # 02:00 Paris is 01:00 UTC in winter.
    assert latest_due(nightly.trigger(), datetime(2026, 1, 10, 0, 59, tzinfo=UTC)) == \
        datetime(2026, 1, 9, 1, 0, tzinfo=UTC)
    assert latest_due(nightly.trigger(), datetime(2026, 1, 10, 1, 0, tzinfo=UTC)) == \
        datetime(2026, 1, 10, 1, 0, tzinfo=UTC)
    weekdays = load_config(write(folder, GOOD)).job("watch")
    assert latest_due(weekdays.trigger(), datetime(2026, 1, 11, 12, 0, tzinfo=UTC)) == \
        datetime(2026, 1, 9, 3, 30, tzinfo=UTC)  # a Sunday: crontab's 1-5 is Monday to Friday


def test_an_alert_hook_gets_the_alert_on_stdin_and_its_exit_status_is_returned(tmp_path: Path) -> None:
    alerts = alerts_of({"alerts": [{"kind": "drift", "feature": "temp", "psi": 0.31},
                                   {"kind": "drift", "feature": "hum", "new": False}]})
    assert len(alerts) == 1  # an alert raised by an earlier run already had its hook run
    status = run_hook('cat > alert.json; test "$PREDSTORE_JOB_ID" = retrain && exit 3', {"model": "m", **alerts[0]},
                      cwd=tmp_path, job_id="retrain")
    assert status == 3
    assert (tmp_path / "alert.json").read_text() == '{"model": "m", "kind": "drift", "feature": "temp", "psi": 0.31}'
    assert run_hook("exit 0", {}, cwd=tmp_path, job_id="x") == 0
    assert run_hook("sleep 5", {}, cwd=tmp_path, job_id="x", timeout=0.2) == -1
