"""Histograms of features and outputs: frozen baselines at registration, per-run profiles while scoring.

Pure functions. A baseline fixes each column's bins from the training data (quantile edges for
numbers, the most frequent categories for text); every run is then counted into the *same* bins,
in one pass, batch by batch, so profiles of any set of runs add up and drift can be computed
later without reading data again.

Numeric bins, for edges e[0] <= ... <= e[m-1] (m >= 2): bin 0 is underflow (x < e[0]); bins
1..m-1 are [e[i-1], e[i]), the last one closed at e[m-1]; bin m is overflow (x > e[m-1]). Missing
values are counted apart, in ``null_count``. Numeric bins also keep the sum of their values
(``sums``), so that each bin's mean is known and adds up across runs. Categorical bins: one per
baseline category, then ``other``; ``unseen`` counts values the model never saw in training at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.predict import Scores
from models.validate import missing_reason
from store.features import FeatureSchema

NUM_BINS = 20
TOP_CATEGORIES = 20
#: Profile column names of the model's outputs (features are named as they are).
PREDICTION = "__prediction__"
LABEL = "__label__"


#: Where an output baseline comes from: rows the model did not learn from, or its training rows.
SOURCES = ("validation", "cross_validation", "in_sample")


def baseline(features: pd.DataFrame, schema: FeatureSchema, scores: Scores, *,
             source: str = "in_sample") -> list[dict[str, Any]]:
    """The frozen profile of the training data's features and of the model's outputs ``scores``
    (on held-out rows, out-of-fold, or in-sample, as ``source`` says; features are 'training')."""
    columns = []
    for column in schema.columns:
        values = features[column.name]
        if column.categorical:
            columns.append(_categorical_baseline(column.name, "feature", values))
        else:
            columns.append(_numeric_baseline(column.name, "feature", values.to_numpy(np.float64, na_value=np.nan)))
    outputs = [_numeric_baseline(PREDICTION, "output", scores.prediction)]
    if scores.labels is not None and scores.classes is not None:
        label = _categorical_baseline(LABEL, "output", pd.Series(scores.labels))
        label["categories"] = [str(c) for c in scores.classes]  # every class, in the model's order
        label["counts"] = count_categorical(scores.labels, label["categories"])["counts"]
        outputs.append(label)
    return [*columns, *({**c, "source": source} for c in outputs)]


def profile_features(features: pd.DataFrame, base: list[dict[str, Any]],
                     known: Mapping[str, Sequence[str] | None]) -> dict[str, dict[str, Any]]:
    """Count one batch's features into the baseline's bins. ``known`` maps categorical columns
    to every category seen in training (for ``unseen``)."""
    out = {}
    for column in base:
        if column["role"] != "feature":
            continue
        name = column["column_name"]
        values = features[name].to_numpy()
        out[name] = count_numeric(np.asarray(values, dtype=np.float64), column["edges"]) \
            if column["kind"] == "numeric" else count_categorical(values, column["categories"], known.get(name))
    return out


def profile_outputs(scores: Scores, base: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Count one batch's predictions (and labels) into the baseline's output bins."""
    out = {}
    for column in base:
        if column["column_name"] == PREDICTION:
            out[PREDICTION] = count_numeric(scores.prediction, column["edges"])
        elif column["column_name"] == LABEL and scores.labels is not None:
            out[LABEL] = count_categorical(scores.labels, column["categories"])
    return out


def profile_rejects(rejects: list[tuple[int, str | None, str, dict[str, Any]]], base: list[dict[str, Any]],
                    known: Mapping[str, Sequence[str] | None]) -> dict[str, dict[str, Any]]:
    """Count the rows `models.validate` rejected for a column's value into that column: a row
    rejected because the column is missing adds to its ``null_count``, one rejected for a category
    never seen in training adds to ``other`` and ``unseen``. So a rise in either shows in the
    profile even where the schema rejects such rows. (Other columns of a rejected row are not
    counted, as before: the row is not scored.)"""
    out = {}
    for column in base:
        if column["role"] != "feature":
            continue
        name = column["column_name"]
        missing, unseen = missing_reason(name), f"column {name!r} has a category not seen in training"
        values = [None if reason == missing else record.get(name)
                  for _, _, reason, record in rejects if reason in (missing, unseen)]
        if not values:
            continue
        out[name] = count_numeric(np.full(len(values), np.nan), column["edges"]) if column["kind"] == "numeric" \
            else count_categorical(np.asarray(values, dtype=object), column["categories"], known.get(name))
    return out


def add(total: dict[str, dict[str, Any]], part: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The sum of two profiles (counts add, extremes combine)."""
    result = dict(total)
    for name, p in part.items():
        t = total.get(name)
        if t is None:
            result[name] = p
            continue
        result[name] = {
            "counts": [a + b for a, b in zip(t["counts"], p["counts"], strict=True)],
            "null_count": t["null_count"] + p["null_count"],
            "n": t["n"] + p["n"],
            "sum": t["sum"] + p["sum"],
            "sum_sq": t["sum_sq"] + p["sum_sq"],
            "sums": None if t.get("sums") is None or p.get("sums") is None
            else [a + b for a, b in zip(t["sums"], p["sums"], strict=True)],
            "min": _extreme(min, t["min"], p["min"]),
            "max": _extreme(max, t["max"], p["max"]),
            "unseen": t["unseen"] + p["unseen"],
        }
    return result


def count_numeric(values: np.ndarray, edges: list[float]) -> dict[str, Any]:
    """Counts of ``values`` in the bins of ``edges`` (see the module docstring)."""
    missing = np.isnan(values)
    present = values[~missing]
    if not edges:  # the baseline had no values: everything present is out of range
        counts, sums = [int(len(present))], [float(present.sum())]
    else:
        cut = np.asarray(edges, dtype=np.float64)
        index = np.searchsorted(cut, present, side="right")
        index[present == cut[-1]] = len(cut) - 1
        counts = np.bincount(index, minlength=len(cut) + 1).tolist()
        sums = np.bincount(index, weights=present, minlength=len(cut) + 1).tolist()
    return {
        "counts": counts,
        "sums": sums,
        "null_count": int(missing.sum()),
        "n": int(len(present)),
        "sum": float(present.sum()),
        "sum_sq": float(np.square(present).sum()),
        "min": float(present.min()) if len(present) else None,
        "max": float(present.max()) if len(present) else None,
        "unseen": 0,
    }


def count_categorical(values: Any, categories: list[str], known: Sequence[str] | None = None) -> dict[str, Any]:
    """Counts per baseline category plus ``other``; ``unseen`` counts values outside ``known``.

    Values are factorized once, so each distinct value (not each row) is turned into text.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    labels = pd.Index(uniques, dtype=object).astype(str)
    slot = pd.Index(categories).get_indexer(labels)  # -1 for anything else
    per_unique = np.bincount(codes[codes >= 0], minlength=len(uniques))
    counts = np.bincount(np.where(slot < 0, len(categories), slot), weights=per_unique,
                         minlength=len(categories) + 1).astype(np.int64)
    unseen = int(per_unique[~labels.isin(known)].sum()) if known is not None else 0
    return {"counts": counts.tolist(), "sums": None, "null_count": int((codes < 0).sum()), "n": int(per_unique.sum()),
            "sum": 0.0, "sum_sq": 0.0, "min": None, "max": None, "unseen": unseen}


def _numeric_baseline(name: str, role: str, values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    edges: list[float] = []
    if len(present):
        edges = np.unique(np.quantile(present, np.linspace(0, 1, NUM_BINS + 1))).tolist()
        if len(edges) == 1:
            edges = edges * 2  # a constant column: one closed bin [c, c]
    counted = count_numeric(values, edges)
    mean = float(present.mean()) if len(present) else None
    std = float(present.std(ddof=1)) if len(present) > 1 else 0.0 if len(present) else None
    return {"column_name": name, "role": role, "kind": "numeric", "edges": edges, "categories": None,
            **counted, "mean": mean, "std": std, "source": "training"}


def _categorical_baseline(name: str, role: str, values: pd.Series) -> dict[str, Any]:
    present = values.dropna().astype(str)
    top = present.value_counts().head(TOP_CATEGORIES)
    categories = sorted(top.index.tolist())
    counted = count_categorical(values, categories)
    return {"column_name": name, "role": role, "kind": "categorical", "edges": None, "categories": categories,
            **counted, "mean": None, "std": None, "source": "training"}


def _extreme(pick: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(pick(a, b))
