"""Bad schedule configs and bad labels files: one line and exit 2 (or 1), never a traceback,
nothing recorded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from models.register import register_model
from predstore.cli import main
from store import Settings
from tests import factories

GOOD_JOB = '[jobs.a]\nkind = "score"\nmodel = "churn"\ninput = "in/*.parquet"\non_arrival = true\n'

#: (id, the file's bytes, words of the error)
CONFIGS = [
    ("empty-file", b"", "jobs: missing"),
    ("not-toml", b"[jobs.a\nkind = score", "not valid TOML"),
    ("not-utf8", b'[jobs.a]\nkind = "sc\xffore"\n', "cannot be read"),
    ("utf16", '[jobs.a]\nkind = "score"\n'.encode("utf-16"), "cannot be read"),
    ("duplicate-key", GOOD_JOB.encode() + b'model = "x"\n', "not valid TOML"),
    ("jobs-not-a-table", b'jobs = "everything"\n', "jobs: must be a table"),
    ("unknown-top-level-key", b"rm_rf = true\n" + GOOD_JOB.encode(), "rm_rf: unknown key"),
    ("unknown-job-key", GOOD_JOB.encode() + b'command = "rm -rf /"\n', "command: unknown key"),
    ("injection-in-job-name", GOOD_JOB.replace("jobs.a", 'jobs."a; DROP TABLE runs; --"').encode(),
     "a job name may hold only"),
    ("path-traversal-job-name", GOOD_JOB.replace("jobs.a", 'jobs."../../x"').encode(), "a job name may hold only"),
    ("unknown-kind", GOOD_JOB.replace('"score"', '"train"').encode(), "is not a job kind"),
    ("model-not-a-string", GOOD_JOB.replace('"churn"', "42").encode(), "must be a non-empty string"),
    ("unregistered-model", GOOD_JOB.replace('"churn"', '"ghost"').encode(), "no model named 'ghost'"),
    ("missing-input-folder", GOOD_JOB.replace("in/", "nowhere/").encode(), "does not exist"),
    ("negative-retries", GOOD_JOB.encode() + b"retries = -1\n", "out of range"),
    ("retries-as-text", GOOD_JOB.encode() + b'retries = "3"\n', "must be a whole number"),
    ("zero-poll-interval", GOOD_JOB.encode() + b"poll_interval = 0\n", "out of range"),
    ("reject-fraction-above-one", GOOD_JOB.encode() + b"max_reject_fraction = 2\n", "out of range"),
    ("cron-six-fields", GOOD_JOB.replace("on_arrival = true", 'cron = "0 0 * * * *"\ntimezone = "UTC"').encode(),
     "is not a valid cron expression"),
    ("cron-and-arrival", GOOD_JOB.encode() + b'cron = "0 2 * * *"\n', "not both"),
    ("unknown-timezone", GOOD_JOB.replace("on_arrival = true", 'cron = "0 2 * * *"\ntimezone = "Mars/Olympus"')
     .encode(), "not a known IANA time zone"),
    ("one-megabyte-model-name", GOOD_JOB.replace('"churn"', '"' + "m" * (1 << 20) + '"').encode(), "no model named"),
    ("infinite-poll-interval", GOOD_JOB.encode() + b"poll_interval = inf\n", "out of range"),
    ("nan-backoff", GOOD_JOB.encode() + b"backoff = nan\n", "out of range"),
]
def params(cases: list[tuple[object, ...]]) -> list[object]:
    return [pytest.param(*case[1:], id=str(case[0])) for case in cases]


@pytest.fixture
def churn(settings: Settings, tmp_path: Path) -> None:
    artifact, train = factories.logistic(tmp_path / "m")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    (tmp_path / "in").mkdir()


@pytest.mark.parametrize(("content", "message"), params(CONFIGS))
def test_a_bad_schedule_config_is_refused_in_one_line(churn: None, content: bytes, message: str, tmp_path: Path,
                                                      cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    config = tmp_path / "schedule.toml"
    config.write_bytes(content)
    result = CliRunner().invoke(main, ["schedule", "--config", str(config), "--once"], env=cli_env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"predstore: error: {config}: ") and message in lines[0], lines[0][:300]
    assert conn.execute("SELECT (SELECT count(*) FROM job_firings) + (SELECT count(*) FROM runs)").fetchone() == (0,)


def _labels(tmp_path: Path, name: str, data: pd.DataFrame | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif name.endswith(".csv"):
        data.to_csv(path, index=False)
    else:
        data.to_parquet(path, index=False)
    return path


def _good(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": [f"e{i}" for i in range(n)], "y": [i % 2 for i in range(n)],
                         "at": pd.date_range("2026-01-01", periods=n, freq="h")})


LABELS = [
    # (id, file name, content, exit code, words of the error or None when it is ingested)
    ("empty-csv", "l.csv", b"", 1, "is empty"),
    ("corrupt-parquet", "l.parquet", b"PAR1 not really", 1, "cannot be read as parquet"),
    ("missing-label-column", "l.parquet", _good().drop(columns=["y"]), 1, "no column(s) 'y'"),
    ("semicolon-csv", "l.csv", _good().to_csv(index=False, sep=";").encode(), 1, "delimited by ';'"),
    ("naive-timestamps", "l.parquet", _good(), 0, None),
    ("unparseable-times", "l.csv", _good().assign(at="yesterday-ish").to_csv(index=False).encode(), 0, None),
    ("null-and-blank-ids", "l.parquet", _good().assign(entity_id=[None, "", " "] + [f"e{i}" for i in range(7)]),
     0, None),
    ("sql-injection-ids", "l.parquet", _good().assign(entity_id=["'; DROP TABLE labels; --"] * 10), 0, None),
    ("ten-thousand-columns", "l.parquet", pd.concat([_good(), pd.DataFrame(
        0.0, index=range(10), columns=[f"x{i}" for i in range(10_000)])], axis=1), 0, None),
    ("nul-in-id", "l.parquet", _good().assign(entity_id=["a\x00b"] + [f"e{i}" for i in range(9)]), 1, "NUL"),
    ("non-utf8-csv", "l.csv", b"entity_id,y,at\ncaf\xe9,1,2026-01-01\n", 1, "not UTF-8"),
    ("csv-labels", "l.csv", _good().to_csv(index=False).encode(), 0, None),
]


@pytest.mark.parametrize(("name", "content", "code", "message"), params(LABELS))
def test_bad_labels_files(churn: None, name: str, content: pd.DataFrame | bytes, code: int, message: str | None,
                          tmp_path: Path, cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    path = _labels(tmp_path, name, content)
    result = CliRunner().invoke(main, ["labels", "ingest", str(path), "--model", "churn", "--entity-col",
                                       "entity_id", "--label-col", "y", "--time-col", "at"], env=cli_env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == code, result.output
    if message is not None:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert conn.execute("SELECT count(*) FROM labels").fetchone() == (0,)
