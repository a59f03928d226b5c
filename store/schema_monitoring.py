"""The monitor's tables (labels and their matches, baselines and run profiles, drift and
performance results, alerts), declared on `store.schema`'s metadata, which imports this module:
the source of truth that migrations must match, with the rest of the schema.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from store.schema import metadata

labels = Table(
    "labels",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("entity_id", Text, primary_key=True),
    Column("event_time", DateTime(timezone=True), primary_key=True),
    Column("label", Text, nullable=False),
    Column("label_value", Float(53)),
    Column("arrival_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # NULL until the monitor has matched the label (again, after a correction) to a prediction.
    Column("matched_at", DateTime(timezone=True)),
    Index("ix_labels_model_name_unmatched", "model_name", postgresql_where=text("matched_at IS NULL")),
)

MATCH_KINDS = ("in_force", "latest_before", "earliest")

# Each label matched once per run role to the prediction it is judged against, with a copy of that
# prediction: the match, and the performance counted from it, outlive the run's dropped table.
label_matches = Table(
    "label_matches",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("entity_id", Text, primary_key=True),
    Column("event_time", DateTime(timezone=True), primary_key=True),
    Column("run_role", Text, primary_key=True),
    Column("run_id", BigInteger, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("matched_as", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("label_value", Float(53)),
    Column("prediction", Float(53)),
    Column("predicted", Text),
    Column("scores", ARRAY(Float(53))),
    Column("matched_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("matched_as IN " + str(MATCH_KINDS), name="matched_as"),
    Index("ix_label_matches_run_id", "run_id"),
)

# What a version's performance estimates need (`models.calibration`), fitted at registration on
# --validation-data: per-class isotonic knots (classifier) or expected error by prediction (regressor).
calibrations = Table(
    "calibrations",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("calibration", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"], ondelete="CASCADE"),
)

# Sufficient statistics of realized performance (`monitor.tallies`) per run, UTC day of the labels'
# event time, and kind of match (``backfill``: labels older than every run holding their entity).
performance_tallies = Table(
    "performance_tallies",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("day", DateTime(timezone=True), primary_key=True),
    Column("backfill", Boolean, primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("run_role", Text, nullable=False),
    Column("tally", ARRAY(Float(53)), nullable=False),
    Column("labels", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_performance_tallies_model_name", "model_name"),
)

# Monitoring: histograms frozen at registration, and each run's counts in the same bins
# (see models/profile.py for the bin layout).
BASELINE_SOURCES = ("training", "validation", "cross_validation", "in_sample")

baselines = Table(
    "baselines",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("column_name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("edges", ARRAY(Float(53))),
    Column("categories", ARRAY(Text)),
    Column("counts", ARRAY(BigInteger), nullable=False),
    Column("null_count", BigInteger, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("mean", Float(53)),
    Column("std", Float(53)),
    Column("min", Float(53)),
    Column("max", Float(53)),
    # Per-bin sums of a numeric column's values (NULL: recorded before they were kept).
    Column("sums", ARRAY(Float(53))),
    # What the histogram was counted on: 'training' (features); for outputs, 'validation' (held-out
    # rows), 'cross_validation' (out-of-fold predictions) or 'in_sample' (the training rows).
    Column("source", Text, nullable=False, server_default="training"),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    CheckConstraint("role IN ('feature', 'output')", name="role"),
    CheckConstraint("kind IN ('numeric', 'categorical')", name="kind"),
    CheckConstraint("source IN " + str(BASELINE_SOURCES), name="source"),
)

run_profiles = Table(
    "run_profiles",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("column_name", Text, primary_key=True),
    Column("counts", ARRAY(BigInteger), nullable=False),
    Column("null_count", BigInteger, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("sum", Float(53), nullable=False),
    Column("sum_sq", Float(53), nullable=False),
    Column("min", Float(53)),
    Column("max", Float(53)),
    Column("unseen", BigInteger, nullable=False, server_default="0"),
    Column("sums", ARRAY(Float(53))),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)

# Monitor results (see monitor/): one drift check per run (or window of runs), its per-feature,
# per-metric results, realized and estimated performance, and the alerts raised.
DRIFT_STATUSES = ("ok", "warning", "alert", "n/a")
ALERT_KINDS = ("data_drift", "prediction_drift", "concept_drift", "estimated_performance", "gradual_drift",
               "held_run", "miss_rate")

drift_checks = Table(
    "drift_checks",
    metadata,
    Column("check_id", BigInteger, Identity(), primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("scope", Text, nullable=False),
    # The run checked (scope 'run'), or NULL for a window: its runs are in run_ids.
    Column("run_id", BigInteger),
    Column("run_ids", ARRAY(BigInteger), nullable=False),
    # The role of the runs checked: a challenger's checks are recorded but raise no alert.
    Column("run_role", Text, nullable=False, server_default="current"),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("rows", BigInteger, nullable=False),
    Column("features", Integer, nullable=False),
    Column("drifted", Integer, nullable=False),
    Column("drift_share", Float(53)),
    Column("dataset_drift", Boolean, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    CheckConstraint("scope IN ('run', 'window')", name="scope"),
    Index("uq_drift_checks_run_id", "run_id", unique=True, postgresql_where=text("scope = 'run'")),
    Index("ix_drift_checks_model_name_computed_at", "model_name", "computed_at"),
)

drift_results = Table(
    "drift_results",
    metadata,
    Column("check_id", BigInteger, primary_key=True),
    Column("column_name", Text, primary_key=True),
    Column("metric", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("value", Float(53)),
    Column("warning", Float(53)),
    Column("alert", Float(53)),
    Column("status", Text, nullable=False),
    ForeignKeyConstraint(["check_id"], ["drift_checks.check_id"], ondelete="CASCADE"),
    CheckConstraint("status IN " + str(DRIFT_STATUSES), name="status"),
)

performance_results = Table(
    "performance_results",
    metadata,
    Column("result_id", BigInteger, Identity(), primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("scope", Text, nullable=False),
    Column("run_id", BigInteger),
    # The role of the runs whose predictions were judged ('current': the served ones).
    Column("run_role", Text, nullable=False, server_default="current"),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("metric", Text, nullable=False),
    Column("value", Float(53)),
    Column("training_value", Float(53)),
    # True for a confidence-based estimate made before labels arrive (classifiers only).
    Column("estimated", Boolean, nullable=False, server_default="false"),
    Column("status", Text, nullable=False),
    Column("labels", BigInteger, nullable=False),
    Column("predictions", BigInteger),
    Column("coverage", Float(53)),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The metric's 95% interval, where it has a cheap one; a realized alert needs all of it past tolerance.
    Column("low", Float(53)),
    Column("high", Float(53)),
    # Labels older than every run holding their entity, judged apart (no alert).
    Column("backfill", Boolean, nullable=False, server_default="false"),
    # What training_value was measured on: 'validation data' or 'training data (in-sample)'.
    Column("reference", Text),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    CheckConstraint("scope IN ('run', 'window')", name="scope"),
    CheckConstraint("status IN " + str(DRIFT_STATUSES), name="status"),
    Index("ix_performance_results_model_name_scope_window_start", "model_name", "scope", "window_start"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", BigInteger, Identity(), primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer),
    Column("kind", Text, nullable=False),
    # What the alert is about ('run:12', 'window:2011-03-07'): an alert is raised once per scope.
    Column("scope_key", Text, nullable=False),
    Column("run_id", BigInteger),
    Column("message", Text, nullable=False),
    Column("details", JSONB),
    Column("raised_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    Column("delivery_error", Text),
    CheckConstraint("kind IN " + str(ALERT_KINDS), name="kind"),
    Index("uq_alerts_model_name_kind_scope_key", "model_name", "kind", "scope_key", unique=True),
)

# Every champion/challenger comparison made (`monitor.compare`), as `models compare --json` prints
# it: the console shows the newest of the pair serving now without reading predictions again.
comparisons = Table(
    "comparisons",
    metadata,
    Column("comparison_id", BigInteger, Identity(), primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("current_version", Integer, nullable=False),
    Column("challenger_version", Integer, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("result", JSONB, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_comparisons_model_name_comparison_id", "model_name", "comparison_id"),
)
