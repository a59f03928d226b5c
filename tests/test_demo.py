"""`predstore demo` on the real data, cut to a few weeks so the suite stays fast."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner

from demo.run import load_hours, run_demo
from predstore.cli import main
from store import Settings


def test_the_shipped_data_is_whole() -> None:
    hours = load_hours()
    assert len(hours) == 17_379 and hours["entity_id"].is_unique
    assert str(hours["event_time"].min()) == "2011-01-01 00:00:00+00:00"
    assert hours["hour"].between(0, 23).all()


def test_demo_scores_labels_and_monitors_each_week(settings: Settings, conn: psycopg.Connection) -> None:
    result = run_demo(settings, say=lambda line: None, weeks=4)
    assert result.weeks == 4
    runs = conn.execute("SELECT partition_key, status, rows_rejected FROM runs ORDER BY run_id").fetchall()
    assert [r[0] for r in runs] == ["week-2011-02-28", "week-2011-03-07", "week-2011-03-14", "week-2011-03-21"]
    assert {r[1] for r in runs} == {"published"}
    labels = conn.execute("SELECT count(*) FROM labels WHERE model_name = 'bikes'").fetchone()
    assert labels is not None and labels[0] > 4 * 150  # four weeks of hourly counts arrived
    page = result.report.read_text()
    assert page.lower().startswith("<!doctype html>") and "bikes" in page
    again = run_demo(settings, say=lambda line: None, weeks=4)  # a second demo reuses what is there
    assert again.weeks == 4
    assert conn.execute("SELECT count(*) FROM runs WHERE status = 'published'").fetchone() == (4,)
    assert conn.execute("SELECT count(*) FROM models").fetchone() == (1,)


def test_demo_command_says_where_things_are(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["demo", "--weeks", "2"], env=cli_env)
    assert result.exit_code == 0, result.output
    for where in ("report", "psql", "curl http://127.0.0.1:8000/v1/models/bikes/predictions/", "predstore runs"):
        assert where in result.output
