"""Promoting a model version, beside registering one (`models.register`): move an alias in one
transaction and audit it. Light on purpose: `predstore models promote` loads no scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store import audit, faults, registry
from store.db import connect
from store.errors import ConfigError
from store.migrate import prepare
from store.settings import Settings


@dataclass(frozen=True)
class Promotion:
    """What a promotion changed: ``alias`` of model ``name`` moved from ``before`` to ``version``."""

    name: str
    alias: str
    before: int | None
    version: int


def promote_model(settings: Settings, name: str, version: int | None = None, *, alias: str = "current",
                  actor: str | None = None, evidence: dict[str, Any] | None = None) -> Promotion:
    """Point ``alias`` (current or challenger) of ``name`` at ``version``; without a version,
    make the challenger current and remove its challenger alias. One transaction, audited as
    ``model.promote`` with ``evidence`` (a comparison's) if given.

    `ConfigError` if ``version`` is already current and asked to be the challenger; `NotFound`
    if the model, the version or (without one) the challenger does not exist.
    """
    with connect(prepare(settings), autocommit=True) as conn, conn.transaction():
        if version is None:
            version = registry.get_model(conn, name, alias="challenger").version
            before = registry.set_alias(conn, name, "current", version)
            registry.remove_alias(conn, name, "challenger")
            audit.record(conn, "model.promote", target=f"{name} v{version}", actor=actor,
                         details={"alias": "current", "before": before, "from": "challenger",
                                  **({"evidence": evidence} if evidence else {})})
            faults.point("promoted")
            return Promotion(name, "current", before, version)
        if alias == "challenger" and version == registry.get_model(conn, name).version:
            raise ConfigError(f"version {version} is already the current version of {name}")
        before = registry.set_alias(conn, name, alias, version)
        audit.record(conn, "model.promote", target=f"{name} v{version}", actor=actor,
                     details={"alias": alias, "before": before})
        faults.point("promoted")
    return Promotion(name, alias, before, version)
