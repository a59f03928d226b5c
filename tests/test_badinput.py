"""The bad-input corpus (tests/badinput.py) through `predstore score`: each case ends in one line
and its documented exit code, or in a published run with the bad rows quarantined; never a
traceback, never lost valid rows, and the partition's previously published run intact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from batch.runner import ScoreRequest, score_partition
from models.register import register_model
from predstore.cli import main
from store import Settings
from tests import factories
from tests.badinput import CASES, ROWS, Case, base
from tests.conftest import cloned_database


@pytest.fixture(scope="module")
def corpus_url(server_url: str, template_url: str) -> Iterator[str]:
    """One database for the whole corpus: every case scores partitions of its own."""
    with cloned_database(server_url, template_url, prefix="predstore_badinput") as url:
        yield url

@pytest.fixture(scope="module")
def corpus(corpus_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str], Path]:
    """Settings with "churn" and "pipe" registered, the matching CLI environment, and a good partition."""
    folder = tmp_path_factory.mktemp("corpus")
    settings = Settings(home=folder / "home", database_url=corpus_url)
    artifact, train = factories.logistic(folder / "lr")
    register_model(settings, artifact, name="churn", train_data=train, target="y")
    artifact, train = factories.pipeline_classifier(folder / "pipe")
    register_model(settings, artifact, name="pipe", train_data=train, target="y")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env.update(PREDSTORE_HOME=str(settings.home), PREDSTORE_DATABASE_URL=corpus_url)
    good = factories.write_parquet(folder / "good.parquet", base(ROWS).assign(entity_id=[f"g{i}" for i in range(ROWS)]))
    return settings, env, good


def published_run(conn: psycopg.Connection, model: str, key: str) -> tuple[int, int, float] | None:
    """The published run of (model, partition): its id, its row count and the sum of its predictions."""
    row = conn.execute(
        """SELECT r.run_id, count(p.entity_id), coalesce(sum(p.prediction), 0) FROM runs r
           LEFT JOIN predictions p ON p.run_id = r.run_id
           WHERE r.model_name = %s AND r.partition_key = %s AND r.status = 'published' GROUP BY r.run_id""",
        [model, key]).fetchone()
    return (int(row[0]), int(row[1]), float(row[2])) if row else None


def run_rows(conn: psycopg.Connection, run_id: int) -> tuple[int, float]:
    row = conn.execute("SELECT count(*), coalesce(sum(prediction), 0) FROM predictions WHERE run_id = %s",
                       [run_id]).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, corpus: tuple[Settings, dict[str, str], Path], tmp_path: Path) -> None:
    settings, env, good = corpus
    key = case.partition or f"case-{case.id}"
    before = score_partition(settings, ScoreRequest(path=good, model_name=case.model, partition_key=key))
    assert before.status == "published"
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        intact = published_run(conn, case.model, key)
        runs_before = conn.execute("SELECT count(*) FROM runs").fetchone()
        path = case.build(tmp_path)
        partition = [] if "--partition" in case.args else ["--partition", key]
        lenient = ["--max-reject-fraction", "0.5"] if case.outcome == "published" else []
        result = CliRunner().invoke(main, ["score", str(path), "--model", case.model, *partition, *lenient,
                                           *case.args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output

        if case.outcome == "error":
            assert result.exit_code == case.code, result.output
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("predstore: error: "), result.stderr
            assert case.message in lines[0], lines[0]
            assert published_run(conn, case.model, key) == intact  # the previous run is still the one served
            if case.code == 2:  # refused before a run was recorded
                assert conn.execute("SELECT count(*) FROM runs").fetchone() == runs_before
            assert conn.execute("SELECT count(*) FROM runs WHERE partition_key = %s AND status = 'running'",
                                [key]).fetchone() == (0,)
            return

        assert result.exit_code == 0, result.output
        now = published_run(conn, case.model, key)
        assert now is not None and intact is not None and now[0] > intact[0]
        duplicates = int(str(case.extra.get("duplicates", 0)))
        assert now[1] == case.scored - duplicates, result.output
        counted = conn.execute("SELECT rows_rejected, rows_duplicate FROM runs WHERE run_id = %s",
                               [now[0]]).fetchone()
        assert counted == (case.rejected, duplicates)
        quarantined = conn.execute("SELECT count(*) FROM rejected_rows WHERE run_id = %s", [now[0]]).fetchone()
        assert quarantined == (case.rejected + duplicates,)
        # The run it superseded keeps its rows (retention drops whole runs, later).
        assert run_rows(conn, intact[0]) == intact[1:]
        if "ids" in case.extra:
            stored = {r[0] for r in conn.execute("SELECT entity_id FROM predictions WHERE run_id = %s", [now[0]])}
            assert stored == set(case.extra["ids"])  # type: ignore[call-overload]
        assert conn.execute("SELECT to_regclass('public.runs') IS NOT NULL").fetchone() == (True,)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id", ["random-bytes-parquet", "non-utf8-entity-ids", "utf16-csv"])
def test_a_real_process_says_one_line(case_id: str, corpus: tuple[Settings, dict[str, str], Path],
                                      tmp_path: Path) -> None:
    """The same as a user meets it: stderr carries one line per problem, no traceback."""
    _, env, _ = corpus
    case = next(c for c in CASES if c.id == case_id)
    path = case.build(tmp_path)
    done = subprocess.run([sys.executable, "-m", "store", "score", str(path), "--model", case.model,
                           "--partition", f"real-{case_id}", "--max-reject-fraction", "0.5"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == (case.code if case.outcome == "error" else 0), done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("predstore: error:")]
    assert len(errors) == (1 if case.outcome == "error" else 0), done.stderr
