"""A model's feature schema as the registry keeps it: what columns the model takes, of what kind,
and what it tolerates. A frozen value, read from and written to the ``models.feature_schema`` JSON
in the shape older versions recorded (`FeatureSchema.from_json`, `FeatureSchema.to_json`).

`models.features.infer_schema` builds one from a fitted model; validation, profiles, live scoring
and training sets read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureColumn:
    """One column the model takes."""

    name: str
    kind: Kind
    #: The training frame's dtype ('string' for a categorical column).
    dtype: str = "float64"
    #: A categorical column's training values (None: more than were recorded, or none known).
    categories: tuple[str, ...] | None = None
    #: Whether the model predicts on a missing value in this column (None: not probed).
    nulls_ok: bool | None = None
    #: Whether the model predicts on a category it never saw (categorical columns only).
    unseen_ok: bool | None = None
    #: No training data, signature or encoder told its kind: numeric was assumed.
    assumed: bool = False

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.categorical:
            out["categories"] = None if self.categories is None else list(self.categories)
        if self.nulls_ok is not None:
            out["nulls_ok"] = self.nulls_ok
        if self.unseen_ok is not None:
            out["unseen_ok"] = self.unseen_ok
        if self.assumed:
            out["assumed"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureColumn:
        categories = data.get("categories")
        return cls(name=str(data["name"]), kind=data["kind"], dtype=str(data.get("dtype") or "float64"),
                   categories=None if categories is None else tuple(str(c) for c in categories),
                   nulls_ok=data.get("nulls_ok"), unseen_ok=data.get("unseen_ok"),
                   assumed=bool(data.get("assumed", False)))


@dataclass(frozen=True)
class FeatureSchema:
    """The columns a model takes, in the order it takes them."""

    columns: tuple[FeatureColumn, ...]
    #: Fitted on named columns (a DataFrame) rather than an array.
    by_name: bool = True
    #: Where the kinds came from: 'training data', 'MLflow signature' or 'model'.
    kinds_from: str = "training data"
    #: The entity column its partitions name rows by (None: the default, ``entity_id``).
    entity_col: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def known_categories(self) -> dict[str, tuple[str, ...] | None]:
        """Each categorical column's recorded categories."""
        return {c.name: c.categories for c in self.columns if c.categorical}

    @property
    def assumed_numeric(self) -> list[str]:
        """The columns whose kind nothing told: read as numbers."""
        return [c.name for c in self.columns if c.assumed]

    def with_entity_col(self, entity_col: str | None) -> FeatureSchema:
        return replace(self, entity_col=entity_col) if entity_col else self

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"columns": [c.to_json() for c in self.columns], "by_name": self.by_name,
                               "kinds_from": self.kinds_from}
        if self.entity_col:
            out["entity_col"] = self.entity_col
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSchema:
        return cls(columns=tuple(FeatureColumn.from_json(c) for c in data.get("columns", [])),
                   by_name=bool(data.get("by_name", True)), kinds_from=str(data.get("kinds_from") or "model"),
                   entity_col=data.get("entity_col") or None)
