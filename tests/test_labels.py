"""Labels: idempotent, partial and late ingestion; point-in-time matching to the run and model
version in force at each label's event time; realized performance recomputed as labels arrive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from sklearn.linear_model import LogisticRegression

from batch.runner import ScoreRequest, score_partition
from models.performance import canonical
from models.register import register_model
from monitor import realized
from monitor.config import MonitorConfig
from monitor.labels import ingest_labels
from monitor.runner import run_monitor
from store import Settings
from store.schema import run_table
from tests import factories

QUIET = MonitorConfig(min_labels=20)
T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


@pytest.fixture
def regressor(settings: Settings, tmp_path: Path) -> tuple[pd.DataFrame, int]:
    """A regressor with a baseline and one published run over 400 entities."""
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(400, seed=2)
    run = score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                                 model_name="amount"))
    assert run.run_id is not None
    return data, run.run_id


def _labels(tmp_path: Path, frame: pd.DataFrame, name: str, *, when: datetime = T0, bias: float = 0.0) -> Path:
    out = pd.DataFrame({"id": frame["entity_id"], "truth": frame["amount"] + bias, "at": when})
    path = tmp_path / name
    out.to_parquet(path, index=False)
    return path


def test_ingest_is_idempotent_partial_and_counts_unscored(settings: Settings, regressor: tuple[pd.DataFrame, int],
                                                          tmp_path: Path, conn: psycopg.Connection) -> None:
    data, _ = regressor
    extra = factories.frame(30, seed=5, start=90_000)  # entities never scored
    path = _labels(tmp_path, pd.concat([data.iloc[:100], extra]), "l.parquet")
    first = ingest_labels(settings, path, model_name="amount", entity_col="id", label_col="truth", time_col="at")
    assert (first["inserted"], first["unscored"], first["updated"], first["unchanged"]) == (130, 30, 0, 0)
    arrivals = conn.execute("SELECT sum(extract(epoch FROM arrival_time)) FROM labels").fetchone()
    again = ingest_labels(settings, path, model_name="amount", entity_col="id", label_col="truth", time_col="at")
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 130)
    assert conn.execute("SELECT sum(extract(epoch FROM arrival_time)) FROM labels").fetchone() == arrivals
    corrected = _labels(tmp_path, data.iloc[:10], "fix.parquet", bias=1.0)
    fixed = ingest_labels(settings, corrected, model_name="amount", entity_col="id", label_col="truth",
                          time_col="at")
    assert (fixed["inserted"], fixed["updated"]) == (0, 10)
    assert conn.execute("SELECT count(*) FROM labels").fetchone() == (130,)


def test_labels_are_matched_to_the_run_in_force_at_their_event_time(
        settings: Settings, tmp_path: Path, conn: psycopg.Connection) -> None:
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(60, seed=2)
    path = factories.write_parquet(tmp_path / "p.parquet", data)
    first = score_partition(settings, ScoreRequest(path=path, model_name="amount"))
    register_model(settings, _refit(artifact, train, tmp_path / "v2.joblib"), name="amount", train_data=train,
                   target="amount", current=True)
    second = score_partition(settings, ScoreRequest(path=path, model_name="amount"))  # v2 supersedes v1's run
    times: dict[int | None, datetime] = dict(conn.execute(
        "SELECT run_id, published_at FROM runs WHERE run_id = ANY(%s)", [[first.run_id, second.run_id]]).fetchall())
    between = times[first.run_id] + (times[second.run_id] - times[first.run_id]) / 2
    cases = {"e0": times[first.run_id] - timedelta(days=3),  # before any run: the earliest retained one
             "e1": between,                                  # v1's run was in force
             "e2": times[second.run_id] + timedelta(seconds=1)}
    frame = pd.DataFrame({"id": list(cases), "truth": [1.0, 2.0, 3.0], "at": list(cases.values())})
    frame.to_parquet(tmp_path / "l.parquet", index=False)
    ingest_labels(settings, tmp_path / "l.parquet", model_name="amount", entity_col="id", label_col="truth",
                  time_col="at")
    run_monitor(settings, "amount", config=QUIET)
    matched = {m[0]: {"run_id": m[1], "model_version": m[2], "matched_as": m[3]} for m in conn.execute(
        "SELECT entity_id, run_id, model_version, matched_as FROM label_matches WHERE run_role = 'current'")}
    assert (matched["e0"]["run_id"], matched["e0"]["matched_as"]) == (first.run_id, "earliest")
    assert (matched["e1"]["run_id"], matched["e1"]["model_version"], matched["e1"]["matched_as"]) == \
        (first.run_id, 1, "in_force")
    assert (matched["e2"]["run_id"], matched["e2"]["model_version"], matched["e2"]["matched_as"]) == \
        (second.run_id, 2, "in_force")


def _refit(artifact: Path, train: Path, out: Path) -> Path:
    """Another version of the model: the same estimator fitted with fewer iterations."""
    model = joblib.load(artifact).set_params(max_iter=5)
    frame = pd.read_parquet(train)
    joblib.dump(model.fit(frame[factories.FEATURES], frame["amount"]), out)
    return out


def test_performance_is_recomputed_as_labels_arrive(settings: Settings, regressor: tuple[pd.DataFrame, int],
                                                    tmp_path: Path, conn: psycopg.Connection,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data, run_id = regressor
    monkeypatch.setattr(realized, "MATCH_CHUNK", 37)  # labels are matched 37 at a time
    t0 = datetime.now(UTC) + timedelta(hours=1)  # outcomes after the run was published: in force
    ingest_labels(settings, _labels(tmp_path, data.iloc[:100], "a.parquet", when=t0), model_name="amount",
                  entity_col="id", label_col="truth", time_col="at")
    first = run_monitor(settings, "amount", config=QUIET)
    per_run = {r.metric: r for r in first.performance if r.scope == "run"}
    assert per_run["mae"].labels == 100 and per_run["mae"].coverage == pytest.approx(0.25)
    assert per_run["mae"].training_value is not None and set(per_run) == {"mae", "rmse", "r2", "mape"}
    assert not any(a.kind == "concept_drift" for a in first.alerts)
    assert run_monitor(settings, "amount", config=QUIET).performance == ()  # nothing new

    # A week later the world changed: the model is now badly wrong.
    ingest_labels(settings, _labels(tmp_path, data.iloc[100:300], "b.parquet", when=t0 + timedelta(days=7), bias=8.0),
                  model_name="amount", entity_col="id", label_col="truth", time_col="at")
    second = run_monitor(settings, "amount", config=QUIET)
    per_run = {r.metric: r for r in second.performance if r.scope == "run"}
    assert per_run["mae"].labels == 300 and per_run["mae"].coverage == pytest.approx(0.75)
    windows = {(r.window_start, r.metric): r for r in second.performance if r.scope == "window"}
    assert len({start for start, _ in windows}) == 2
    late = max(start for start, _ in windows)
    assert windows[(late, "mae")].status == "alert" and windows[(late, "mae")].labels == 200
    assert [a.kind for a in second.alerts] == ["concept_drift"]
    explained = second.alerts[0].details  # the window and the labels behind it, for a retraining hook
    assert explained["labels"] == 200 and explained["window_start"] < explained["window_end"]
    stored = conn.execute("SELECT count(*) FROM performance_over_time WHERE scope = 'window' AND metric = 'mae'")
    assert stored.fetchone() == (2,)

    # Outcomes from before the run (a backfill): reported apart, and they alert nobody.
    ingest_labels(settings, _labels(tmp_path, data.iloc[300:], "c.parquet", when=t0 - timedelta(days=30), bias=8.0),
                  model_name="amount", entity_col="id", label_col="truth", time_col="at")
    third = run_monitor(settings, "amount", config=QUIET)
    backfill = [r for r in third.performance if r.backfill and r.metric == "mae"]
    assert {r.scope: r.labels for r in backfill} == {"run": 100, "window": 100}
    assert third.labels["earliest"] == 100 and third.labels["in_force"] == 300
    assert not third.alerts and [a.kind for a in third.standing] == ["concept_drift"]
    asked = run_monitor(settings, "amount", config=replace(QUIET, backfill_alerts=True),
                        since=datetime(2000, 1, 1, tzinfo=UTC))
    assert [a.scope.split(":")[0] for a in asked.alerts] == ["backfill"]


def test_a_run_dropped_by_retention_keeps_its_matched_labels(settings: Settings, tmp_path: Path,
                                                             conn: psycopg.Connection) -> None:
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(50, seed=2)
    path = factories.write_parquet(tmp_path / "p.parquet", data)
    first = score_partition(settings, ScoreRequest(path=path, model_name="amount"))
    when = datetime.now(UTC) + timedelta(minutes=1)
    ingest_labels(settings, _labels(tmp_path, data.iloc[:30], "a.parquet", when=when, bias=1.0),
                  model_name="amount", entity_col="id", label_col="truth", time_col="at")
    before = run_monitor(settings, "amount", config=QUIET)
    mae = next(r for r in before.performance if r.scope == "run" and r.metric == "mae")
    assert mae.run_id == first.run_id and mae.labels == 30
    # Retention drops the run: its table goes, its ledger row stays; a later run scores the same entities.
    with conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE predictions DETACH PARTITION {}").format(run_table(first.run_id or 0)))
        conn.execute(sql.SQL("DROP TABLE {}").format(run_table(first.run_id or 0)))
        conn.execute("UPDATE runs SET status = 'expired' WHERE run_id = %s", [first.run_id])
    later = score_partition(settings, ScoreRequest(path=path, model_name="amount", force=True))
    # A correction of labels already matched to the dropped run: they stay with it.
    ingest_labels(settings, _labels(tmp_path, data.iloc[:10], "fix.parquet", when=when, bias=2.0),
                  model_name="amount", entity_col="id", label_col="truth", time_col="at")
    after = run_monitor(settings, "amount", config=QUIET, since=datetime(2000, 1, 1, tzinfo=UTC))
    runs = {r.run_id: r for r in after.performance if r.scope == "run" and r.metric == "mae"}
    assert set(runs) == {first.run_id} and runs[first.run_id].labels == 30
    corrected = conn.execute("""SELECT avg(abs(m.prediction - l.label_value)) FROM label_matches m
                                JOIN labels l USING (model_name, entity_id, event_time)""").fetchone()
    assert corrected is not None and runs[first.run_id].value == pytest.approx(corrected[0], rel=1e-9)
    assert runs[first.run_id].value != pytest.approx(mae.value)
    matched = conn.execute("SELECT DISTINCT run_id FROM label_matches").fetchall()
    assert matched == [(first.run_id,)] and later.run_id != first.run_id


def test_labels_command_reads_csv_and_reports(settings: Settings, regressor: tuple[pd.DataFrame, int],
                                              tmp_path: Path, cli_env: dict[str, str],
                                              conn: psycopg.Connection) -> None:
    data, _ = regressor
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"id": data["entity_id"].iloc[:50], "truth": data["amount"].iloc[:50]}).to_csv(csv, index=False)
    command = ["predstore", "labels", "ingest", str(csv), "--model", "amount", "--entity-col", "id",
               "--label-col", "truth", "--event-time", "2026-01-05"]
    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "50 new" in done.stdout and "no retained run" not in done.stdout  # every id matched a prediction
    first = data.iloc[0]
    stored = conn.execute("SELECT label, label_value, event_time FROM labels WHERE entity_id = %s",
                          [first["entity_id"]]).fetchone()
    assert stored is not None and stored[0] == str(first["amount"]) and stored[1] == pytest.approx(first["amount"])
    assert stored[2] == datetime(2026, 1, 5, tzinfo=UTC)
    again = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=60)
    assert "0 new" in again.stdout and "50 unchanged" in again.stdout
    wrong = subprocess.run([*command[:6], "--entity-col", "nope", "--label-col", "truth"], env=cli_env,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "no column(s) 'nope'" in wrong.stderr
    assert wrong.stderr.strip().count("\n") == 0


def test_a_float_target_classifier_meets_integer_labels(settings: Settings, tmp_path: Path) -> None:
    """Classes stored as 1.0 and labels read as 1 are the same class."""
    train = factories.frame(500)
    train["y"] = train["y"].astype(float)
    model = LogisticRegression().fit(train[factories.FEATURES], train["y"])
    joblib.dump(model, tmp_path / "float.joblib")
    train[[*factories.FEATURES, "y"]].to_parquet(tmp_path / "train.parquet", index=False)
    registered = register_model(settings, tmp_path / "float.joblib", name="churn",
                                train_data=tmp_path / "train.parquet", target="y")
    assert registered.classes == [0.0, 1.0]
    data = factories.frame(300, seed=4)
    score_partition(settings, ScoreRequest(path=factories.write_parquet(tmp_path / "p.parquet", data),
                                           model_name="churn"))
    csv = tmp_path / "labels.csv"  # text labels "0" and "1"
    pd.DataFrame({"id": data["entity_id"], "y": data["y"].astype(int), "at": T0.isoformat()}).to_csv(csv, index=False)
    ingest_labels(settings, csv, model_name="churn", entity_col="id", label_col="y", time_col="at")
    result = run_monitor(settings, "churn", config=QUIET)
    accuracy = next(r for r in result.performance if r.scope == "run" and r.metric == "accuracy")
    expected = (model.predict(data[factories.FEATURES]) == data["y"]).mean()
    assert accuracy.labels == 300 and accuracy.value == pytest.approx(expected)
    assert expected > 0.4


def test_labels_are_stored_in_one_canonical_form(settings: Settings, regressor: tuple[pd.DataFrame, int],
                                                 tmp_path: Path, conn: psycopg.Connection) -> None:
    data, _ = regressor
    csv = tmp_path / "l.csv"
    csv.write_text("id,truth\ne0,1.0\ne1, 2 \ne2,true\ne3,0.50\ne4,yes\n")
    ingest_labels(settings, csv, model_name="amount", entity_col="id", label_col="truth", event_time=T0)
    stored: dict[str, str] = dict(conn.execute("SELECT entity_id, label FROM labels").fetchall())
    assert stored == {"e0": "1", "e1": "2", "e2": "True", "e3": "0.5", "e4": "yes"}
    assert [canonical(v) for v in (1, 1.0, np.float64(1.0), "1.0", True, "TRUE", None, float("nan"))] == \
        ["1", "1", "1", "1", "True", "True", None, None]


def test_the_same_label_file_copied_and_ingested_again_changes_nothing(
        settings: Settings, regressor: tuple[pd.DataFrame, int], tmp_path: Path, conn: psycopg.Connection) -> None:
    data, _ = regressor
    original = tmp_path / "labels.csv"
    pd.DataFrame({"id": data["entity_id"].iloc[:40], "truth": data["amount"].iloc[:40]}).to_csv(original, index=False)
    first = ingest_labels(settings, original, model_name="amount", entity_col="id", label_col="truth")
    assert first["inserted"] == 40
    copy = tmp_path / "copy" / "labels.csv"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    later = original.stat().st_mtime + 3600
    os.utime(copy, (later, later))  # a copy made an hour later: another modification time
    again = ingest_labels(settings, copy, model_name="amount", entity_col="id", label_col="truth")
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 40)
    assert conn.execute("SELECT count(*) FROM labels").fetchone() == (40,)
    changed = pd.read_csv(copy)
    changed.loc[:4, "truth"] += 1.0  # five outcomes changed since: new labels, at the copy's time
    changed.to_csv(copy, index=False)
    os.utime(copy, (later, later))
    moved = ingest_labels(settings, copy, model_name="amount", entity_col="id", label_col="truth")
    assert (moved["inserted"], moved["unchanged"]) == (5, 35)


#: Every waiting label's match found by probing every retained run's table (no serving directory):
#: what `store.matching.match_labels` must agree with.
PROBE_EVERY_RUN = """
    SELECT DISTINCT ON (l.entity_id, l.event_time, r.role)
           l.entity_id, l.event_time, r.role, r.run_id,
           CASE WHEN r.published_at > l.event_time THEN 'earliest'
                WHEN l.event_time < coalesce(r.superseded_at, 'infinity') THEN 'in_force'
                ELSE 'latest_before' END
    FROM labels l
    JOIN predictions p ON p.entity_id = l.entity_id COLLATE "C"
    JOIN runs r ON r.run_id = p.run_id
    WHERE l.matched_at IS NULL AND r.status IN ('published', 'superseded')
    ORDER BY l.entity_id, l.event_time, r.role, r.published_at <= l.event_time DESC,
             CASE WHEN r.published_at <= l.event_time THEN r.published_at END DESC, r.published_at, r.run_id"""


def test_matching_through_the_serving_directory_agrees_with_probing_every_run(
        settings: Settings, tmp_path: Path, conn: psycopg.Connection) -> None:
    """Overlapping partitions, a re-score by a new version that drops entities (a superseded run
    still holding them), a challenger, a run expired by retention, and labels before, between and
    after every publish: each label is matched to the run that probing every table finds."""
    from batch.retention import prune_runs
    from store import registry

    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    parts = {"x": factories.frame(40, seed=1, start=100), "b": factories.frame(60, seed=3, start=30),
             "a": factories.frame(60, seed=2, start=0)}

    def score(key: str, frame: pd.DataFrame, **options: object) -> None:
        path = factories.write_parquet(tmp_path / f"{key}.parquet", frame)
        result = score_partition(settings, ScoreRequest(path=path, model_name="amount", partition_key=key,
                                                        **options))  # type: ignore[arg-type]
        assert result.status == "published", result

    for key in ("x", "b", "a"):
        score(key, parts[key])
    expire_before = conn.execute("SELECT max(published_at) FROM runs WHERE partition_key = 'x'").fetchone()
    conn.commit()
    v2 = register_model(settings, _refit(artifact, train, tmp_path / "v2.joblib"), name="amount",
                        train_data=train, target="amount", current=True).version
    score("a", parts["a"].iloc[:40])  # v2 supersedes v1's run of 'a'; b's older run serves e40..e59 again
    v3 = register_model(settings, _refit(artifact, train, tmp_path / "v3.joblib"), name="amount",
                        train_data=train, target="amount").version
    with conn.transaction():
        registry.set_alias(conn, "amount", "challenger", v3)
    score("c", factories.frame(50, seed=4, start=70))  # current and challenger
    score("a", parts["a"].iloc[10:40], force=True)     # v2 again, without e0..e9: no run serves them
    assert expire_before is not None and v2 != v3
    pruned = prune_runs(settings, model="amount", older_than=timedelta(0),
                        now=expire_before[0] + timedelta(microseconds=1))
    assert [r.partition for r in pruned.runs] == ["x"]
    times = sorted(t for (t,) in conn.execute(
        "SELECT published_at FROM runs WHERE status IN ('published', 'superseded')"))
    moments = [times[0] - timedelta(days=1), *(a + (b - a) / 2 for a, b in zip(times, times[1:], strict=False)),
               times[-1] + timedelta(minutes=1)]
    conn.commit()
    entities = [f"e{i}" for i in range(0, 140, 3)]
    frame = pd.DataFrame([{"id": e, "truth": float(i), "at": at} for i, e in enumerate(entities) for at in moments])
    frame.to_parquet(tmp_path / "l.parquet", index=False)
    ingested = ingest_labels(settings, tmp_path / "l.parquet", model_name="amount", entity_col="id",
                             label_col="truth", time_col="at")
    # e120..e139 were only in the expired run; e0..e9 only in superseded ones, which still count
    assert ingested["unscored"] == len([e for e in entities if int(e[1:]) >= 120]) * len(moments)
    expected = sorted(conn.execute(PROBE_EVERY_RUN).fetchall())
    conn.commit()
    assert {row[4] for row in expected} == {"earliest", "in_force", "latest_before"}
    assert {row[2] for row in expected} == {"current", "challenger"}
    run_monitor(settings, "amount", config=QUIET)
    matched = sorted(conn.execute(
        "SELECT entity_id, event_time, run_role, run_id, matched_as FROM label_matches").fetchall())
    assert matched == expected


def test_a_monitor_killed_between_matching_and_counting_loses_and_doubles_nothing(
        settings: Settings, tmp_path: Path, cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    """SIGKILL after a chunk of labels was matched (by the directory and by the walk) and before
    its tallies were added: the labels wait again, and the next run counts each of them once."""
    artifact, train = factories.regressor(tmp_path / "m")
    register_model(settings, artifact, name="amount", train_data=train, target="amount")
    data = factories.frame(80, seed=2)
    path = factories.write_parquet(tmp_path / "p.parquet", data)
    first = score_partition(settings, ScoreRequest(path=path, model_name="amount"))
    published = conn.execute("SELECT published_at FROM runs WHERE run_id = %s", [first.run_id]).fetchone()
    conn.commit()
    assert published is not None
    second = score_partition(settings, ScoreRequest(path=path, model_name="amount", force=True))  # old labels: walk
    old = _labels(tmp_path, data.iloc[:40], "old.parquet", when=published[0] + timedelta(microseconds=1))
    new = _labels(tmp_path, data.iloc[40:], "new.parquet", when=datetime.now(UTC) + timedelta(minutes=1))
    for labels in (old, new):
        ingest_labels(settings, labels, model_name="amount", entity_col="id", label_col="truth", time_col="at")
    killed = subprocess.run([sys.executable, "-m", "store", "monitor", "--model", "amount"], capture_output=True,
                            env={**cli_env, "PREDSTORE_FAULT_POINT": "matched"}, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert conn.execute("SELECT count(*) FILTER (WHERE matched_at IS NULL), count(*) FROM labels").fetchone() == \
        (80, 80)
    assert conn.execute("SELECT (SELECT count(*) FROM label_matches), (SELECT count(*) FROM performance_tallies)"
                        ).fetchone() == (0, 0)
    conn.commit()
    run_monitor(settings, "amount", config=QUIET)
    runs = dict(conn.execute("SELECT run_id, count(*) FROM label_matches WHERE matched_as = 'in_force' GROUP BY 1"))
    assert runs == {first.run_id: 40, second.run_id: 40}, runs
    assert conn.execute("SELECT sum(labels) FROM performance_tallies").fetchone() == (80,)
    assert conn.execute("SELECT count(*) FROM labels WHERE matched_at IS NULL").fetchone() == (0,)
