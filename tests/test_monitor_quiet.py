"""End to end through the commands, on the bike-sharing data: batches drawn like the training data
raise no alert of any kind; a batch with one shifted feature flags that feature."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from demo.run import CATEGORICAL, NUMERIC, load_hours
from predstore.cli import main

QUIET_BATCHES = 20
BATCH_ROWS = 300
SHIFTED = "hum"


def test_quiet_batches_stay_quiet_and_a_shifted_feature_is_flagged(cli_env: dict[str, str], tmp_path: Path) -> None:
    hours = load_hours().sample(frac=1.0, random_state=0).reset_index(drop=True)  # one random split
    columns = ["entity_id", *CATEGORICAL, *NUMERIC]
    train, validation = hours.iloc[:6000], hours.iloc[6000:9000]
    batches = [hours.iloc[9000 + i * BATCH_ROWS:9000 + (i + 1) * BATCH_ROWS] for i in range(QUIET_BATCHES + 1)]
    encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
                               remainder="passthrough")
    model = make_pipeline(encode, RandomForestRegressor(n_estimators=30, min_samples_leaf=2, random_state=0,
                                                        n_jobs=1))
    model.fit(train[CATEGORICAL + NUMERIC], train["cnt"])
    joblib.dump(model, tmp_path / "rf.joblib")
    train[[*columns, "cnt"]].to_parquet(tmp_path / "train.parquet", index=False)
    validation[[*columns, "cnt"]].to_parquet(tmp_path / "validation.parquet", index=False)
    paths = []
    for i, batch in enumerate(batches):
        path = tmp_path / f"batch-{i:02d}.parquet"
        frame = batch[columns].copy()
        if i == QUIET_BATCHES:
            frame[SHIFTED] += 0.75 * hours[SHIFTED].std()
        frame.to_parquet(path, index=False)
        paths.append(str(path))

    runner = CliRunner()

    def predstore(*args: str) -> str:
        result = runner.invoke(main, list(args), env=cli_env)
        assert result.exit_code in (0, 1), result.output
        return result.output

    said = predstore("models", "register", str(tmp_path / "rf.joblib"), "--name", "bikes", "--train-data",
                     str(tmp_path / "train.parquet"), "--target", "cnt", "--validation-data",
                     str(tmp_path / "validation.parquet"), "--entity-col", "entity_id", "--trust-joblib")
    assert "output baseline: validation data" in said
    predstore("score", *paths[:QUIET_BATCHES], "--model", "bikes")
    quiet = json.loads(predstore("monitor", "--model", "bikes", "--json"))
    assert len(quiet["checks"]) == QUIET_BATCHES
    assert quiet["alerts"] == [], [a["message"] for a in quiet["alerts"]]  # no drift, gradual or otherwise
    assert all(not c["drifted"] and not c["outputs_drifted"] for c in quiet["checks"])

    predstore("score", paths[-1], "--model", "bikes")
    shifted = json.loads(predstore("monitor", "--model", "bikes", "--json"))
    (check,) = shifted["checks"]
    assert check["drifted"] == [SHIFTED]
    assert [a["kind"] for a in shifted["alerts"] if a["kind"] == "data_drift"] == ["data_drift"]
    flagged = {r["column_name"] for r in check["results"] if r["metric"] == "drift" and r["status"] == "alert"}
    assert flagged - {"__prediction__"} == {SHIFTED}  # the predictions may follow it; no other feature does
    assert np.isfinite([r["value"] for r in check["results"] if r["metric"] == "p_adjusted"]).all()
