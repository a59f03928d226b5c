"""Live traffic's histograms: the rows the lookup API scored live (`store.live`), counted per UTC
day into the version's baseline bins, as a batch run's rows are while it scores. `monitor.runner`
checks each day's profile against the baseline as a window of its own (run role ``live``), apart
from the batch runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.predict import Scores
from models.profile import add, profile_features, profile_outputs
from store.features import FeatureSchema

#: Days back the first check of a model's live traffic looks.
LOOKBACK_DAYS = 31


def profile(rows: Sequence[Mapping[str, Any]], base: list[dict[str, Any]], schema: FeatureSchema,
            classes: Sequence[Any] | None) -> dict[str, dict[str, Any]]:
    """The profile of live predictions (each with ``features``, ``prediction`` and ``label``) in the
    bins of ``base``: features typed as the schema says (a value of the wrong type counts as missing),
    and the outputs."""
    frame = pd.DataFrame([row["features"] for row in rows])
    known = schema.known_categories
    for column in schema.columns:
        name = column.name
        if name not in frame:
            frame[name] = None
        if not column.categorical:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
        else:
            frame[name] = frame[name].astype(object)
    prediction = np.array([np.nan if row["prediction"] is None else row["prediction"] for row in rows],
                          dtype=np.float64)
    scores = Scores(prediction=prediction)
    if classes:
        names = [str(c) for c in classes]
        best = np.array([names.index(row["label"]) if row["label"] in names else 0 for row in rows])
        scores = Scores(prediction=prediction, classes=np.asarray(classes, dtype=object), best=best)
    return add(profile_features(frame, base, known), profile_outputs(scores, base))
