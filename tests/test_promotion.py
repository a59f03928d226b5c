"""Promoting a model version from Python, as `predstore models promote` does: one transaction, audited."""

from __future__ import annotations

import psycopg
import pytest

from models.promotion import Promotion, promote_model
from store import ConfigError, NotFound, Settings, registry
from store.features import FeatureSchema


def two_versions(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for version in (1, 2):
            registry.insert_model(conn, name="m", version=version, artifact_uri=f"/artifacts/m-{version}",
                                  sha256="0" * 64, format="joblib", task="classification",
                                  feature_schema=FeatureSchema(()),
                                  classes=["no", "yes"], training_metrics=None)
        registry.set_alias(conn, "m", "current", 1)


def test_promote_a_version_then_the_challenger(settings: Settings, database_url: str) -> None:
    two_versions(database_url)
    with pytest.raises(ConfigError, match="version 1 is already the current version of m"):
        promote_model(settings, "m", 1, alias="challenger")
    with pytest.raises(NotFound):
        promote_model(settings, "m")  # no challenger yet
    assert promote_model(settings, "m", 2, alias="challenger", actor="ann") == Promotion("m", "challenger", None, 2)
    assert promote_model(settings, "m", actor="ann", evidence={"verdict": "better"}) == Promotion("m", "current", 1, 2)
    with psycopg.connect(database_url) as conn:
        assert registry.get_model(conn, "m").version == 2
        with pytest.raises(NotFound):
            registry.get_model(conn, "m", alias="challenger")
        audits = conn.execute("SELECT actor, details FROM audit WHERE action = 'model.promote' ORDER BY audit_id")
        assert [details for _, details in audits] == [
            {"alias": "challenger", "before": None},
            {"alias": "current", "before": 1, "from": "challenger", "evidence": {"verdict": "better"}},
        ]
