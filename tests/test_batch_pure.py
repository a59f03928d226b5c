"""The pure parts of batch scoring: schema inference, validation, scoring, the stage pipeline."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from batch.overlap import background
from batch.tasks import Digest
from models.artifacts import read_model
from models.features import infer_schema
from models.predict import predict, score_frame
from models.validate import MAX_ENTITY_ID_LENGTH, check_columns, validate
from store import InputError
from store.features import FeatureSchema
from tests import factories


def schema_for(artifact: Path, train: Path, target: str) -> FeatureSchema:
    return infer_schema(read_model(artifact), pd.read_parquet(train).drop(columns=[target]))


def test_schema_probes_what_each_model_tolerates(tmp_path: Path) -> None:
    lr = schema_for(*factories.logistic(tmp_path), "y")
    assert lr.names == factories.FEATURES
    assert not any(c.nulls_ok for c in lr.columns)  # LogisticRegression rejects NaN
    hgb = schema_for(*factories.regressor(tmp_path), "amount")
    assert all(c.nulls_ok for c in hgb.columns)  # HistGradientBoosting takes NaN
    strict = schema_for(*factories.pipeline_classifier(tmp_path, handle_unknown="error"), "y")
    color = next(c for c in strict.columns if c.name == "color")
    assert color.kind == "categorical" and color.categories == ("blue", "green", "red")
    assert color.unseen_ok is False
    lenient = schema_for(*factories.pipeline_classifier(tmp_path / "b", handle_unknown="ignore"), "y")
    assert next(c for c in lenient.columns if c.name == "color").unseen_ok is True


def test_validate_rejects_each_bad_value_with_its_reason(tmp_path: Path) -> None:
    schema = schema_for(*factories.pipeline_classifier(tmp_path), "y")
    batch = pa.RecordBatch.from_pydict({
        "entity_id": ["a", None, "  ", "d", "e", "f", "g", "x" * (MAX_ENTITY_ID_LENGTH + 1)],
        "f0": ["1.5", "1", "1", "abc", "inf", None, "2", "1"],
        "f1": [0.0] * 8,
        "f2": [1.0] * 8,
        "color": ["red", "red", "red", "red", "red", "red", "purple", "red"],
    })
    checked = validate(batch, schema, entity_col="entity_id", first_row=11)
    assert checked.entity_ids.to_pylist() == ["a"]
    assert checked.row_numbers.tolist() == [11]
    assert checked.features["f0"].tolist() == [1.5]
    reasons = {row: reason for row, _, reason, _ in checked.rejects}
    assert reasons == {
        12: "entity id is missing",
        13: "entity id is missing",
        14: "column 'f0' is not a number",
        15: "column 'f0' is infinite",
        16: "column 'f0' has no value (empty, null, NA or n/a)",
        17: "column 'color' has a category not seen in training",
        18: f"entity id is longer than {MAX_ENTITY_ID_LENGTH} characters",
    }
    raw = {row: record for row, _, _, record in checked.rejects}
    assert raw[17] == {"entity_id": "g", "f0": "2", "f1": 0.0, "f2": 1.0, "color": "purple"}


def test_validate_keeps_nan_for_a_model_that_takes_it(tmp_path: Path) -> None:
    schema = schema_for(*factories.regressor(tmp_path), "amount")
    batch = pa.RecordBatch.from_pydict({"entity_id": [1, 2], "f0": [np.nan, 1.0], "f1": [0.0, 0.0],
                                        "f2": [0.0, float("-inf")]})
    checked = validate(batch, schema, entity_col="entity_id", first_row=1)
    assert checked.entity_ids.to_pylist() == ["1"]  # integer ids become text
    assert [r[2] for r in checked.rejects] == ["column 'f2' is infinite"]


def test_missing_columns_are_named_before_anything_runs(tmp_path: Path) -> None:
    schema = schema_for(*factories.logistic(tmp_path), "y")
    with pytest.raises(InputError, match=r"lacks required column\(s\) 'f1', 'f2'.*add them to the input"):
        check_columns(schema, "entity_id", ["entity_id", "f0"])
    with pytest.raises(InputError, match="pass --entity-col"):
        check_columns(schema, "customer", ["entity_id", *factories.FEATURES])


def test_score_frame_matches_the_model(tmp_path: Path) -> None:
    data = factories.frame(50, seed=3)
    lr = read_model(factories.logistic(tmp_path)[0])
    out = score_frame(lr, data)
    assert np.allclose(out["prediction"], lr.predict_proba(data[factories.FEATURES])[:, 1])
    assert out["label"].tolist() == [str(v) for v in lr.predict(data[factories.FEATURES])]
    assert "scores" not in out
    multi = read_model(factories.multiclass(tmp_path)[0])
    out = score_frame(multi, data)
    proba = multi.predict_proba(data[factories.FEATURES])
    assert np.allclose(np.vstack(out["scores"].to_numpy()), proba)
    assert np.allclose(out["prediction"], proba.max(axis=1))
    hgb = read_model(factories.regressor(tmp_path)[0])
    assert np.allclose(score_frame(hgb, data)["prediction"], hgb.predict(data[factories.FEATURES]))
    assert list(data.columns) == ["entity_id", *factories.FEATURES, "color", "y", "amount"]  # input untouched


def test_digest_does_not_depend_on_batching(tmp_path: Path) -> None:
    lr = read_model(factories.multiclass(tmp_path)[0])
    data = factories.frame(100)
    ids = pa.array(data["entity_id"])
    whole, parts = Digest(), Digest()
    whole.update(ids, predict(lr, data))
    for start, stop in ((0, 37), (37, 100)):  # slices of one array, as filtering and batching make
        parts.update(ids.slice(start, stop - start), predict(lr, data.iloc[start:stop]))
    assert whole.hexdigest() == parts.hexdigest()
    changed = data.assign(f0=data.f0 + 1)
    other = Digest()
    other.update(ids, predict(lr, changed))
    assert other.hexdigest() != whole.hexdigest()


def test_background_overlaps_and_propagates_errors() -> None:
    seen = []

    def produce():
        for i in range(5):
            seen.append(threading.current_thread().name)
            yield i
        raise ValueError("boom at the end")

    out = []
    with pytest.raises(ValueError, match="boom"):
        for item in background(produce(), name="test"):
            out.append(item)
    assert out == [0, 1, 2, 3, 4]
    assert set(seen) == {"predstore-test"}


def test_background_stops_its_producer_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = background(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    count = len(produced)
    assert count <= 5


def test_peak_rss_is_the_processs_own_not_its_parents() -> None:
    """ru_maxrss survives exec: a child of a big process would report the parent's size."""
    ballast = np.ones(600 * 2**20 // 8)  # 600 MiB resident here, in the parent
    child = subprocess.run(
        [sys.executable, "-c", "from store.prometheus import peak_rss_bytes; print(peak_rss_bytes())"],
        capture_output=True, text=True, check=True)
    assert int(child.stdout) < 450 * 2**20 < ballast.nbytes
