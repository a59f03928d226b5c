"""The store's tables, as SQLAlchemy Core metadata: the source of truth that migrations must match.

`alembic check` (run in CI) fails when this module and ``migrations/versions`` disagree.
Views are plain SQL in the migrations; their column lists are documented in docs/sql.md
and docs/monitoring.md.
"""

from __future__ import annotations

from psycopg import sql
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
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

#: Schema holding one table per scoring run; each is attached to ``predictions`` when published.
PARTITION_SCHEMA = "predstore_partitions"
#: Longest entity id stored: scoring rejects longer ones, and the lookup API refuses them.
MAX_ENTITY_ID_LENGTH = 512


def run_table(run_id: int) -> sql.Composed:
    """The name of the table holding one run's predictions."""
    return sql.SQL("{}.{}").format(sql.Identifier(PARTITION_SCHEMA), sql.Identifier(f"run_{run_id}"))


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

RUN_ROLES = ("current", "challenger")
RUN_STATUSES = ("running", "published", "superseded", "skipped", "failed", "abandoned", "dropped", "expired")

models = Table(
    "models",
    metadata,
    Column("name", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("artifact_uri", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("flavor", Text, nullable=False, server_default="sklearn"),
    Column("task", Text, nullable=False),
    Column("feature_schema", JSONB, nullable=False),
    Column("classes", JSONB),
    Column("training_metrics", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("task IN ('classification', 'regression')", name="task"),
    CheckConstraint("format IN ('joblib', 'skops')", name="format"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("alias", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["model_name", "version"], ["models.name", "models.version"]),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", BigInteger, Identity(), primary_key=True),
    Column("job_kind", Text, nullable=False, server_default="score"),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("model_sha256", Text),
    Column("partition_key", Text, nullable=False),
    Column("input_uri", Text, nullable=False),
    Column("input_fingerprint", Text),
    Column("status", Text, nullable=False, server_default="running"),
    Column("rows_in", BigInteger, nullable=False, server_default="0"),
    Column("rows_scored", BigInteger, nullable=False, server_default="0"),
    Column("rows_rejected", BigInteger, nullable=False, server_default="0"),
    Column("rows_duplicate", BigInteger, nullable=False, server_default="0"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("published_at", DateTime(timezone=True)),
    Column("superseded_at", DateTime(timezone=True)),
    Column("duration_s", Float(53)),
    Column("rows_per_s", Float(53)),
    Column("peak_rss_bytes", BigInteger),
    Column("cpu_seconds", Float(53)),
    Column("error", Text),
    Column("code_version", Text),
    Column("host", Text),
    Column("pid", Integer),
    Column("predictions_digest", Text),
    Column("details", JSONB),
    # 'current': the served run of the partition; 'challenger': scored beside it, served only on request.
    Column("role", Text, nullable=False, server_default="current"),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    CheckConstraint("status IN " + str(RUN_STATUSES), name="status"),
    CheckConstraint("role IN " + str(RUN_ROLES), name="role"),
    # One run at a time per (model, partition, role), and at most one published: publish flips both.
    Index(
        "uq_runs_running",
        "model_name",
        "partition_key",
        "role",
        unique=True,
        postgresql_where=text("status = 'running'"),
    ),
    Index(
        "uq_runs_published",
        "model_name",
        "partition_key",
        "role",
        unique=True,
        postgresql_where=text("status = 'published'"),
    ),
    Index("ix_runs_model_name_started_at", "model_name", "started_at"),
)

# Each partition (a run's table) has a unique index on entity_id alone: run_id is constant in it.
predictions = Table(
    "predictions",
    metadata,
    Column("run_id", BigInteger, nullable=False),
    Column("entity_id", Text(collation="C"), nullable=False),
    Column("row_number", BigInteger, nullable=False),
    Column("prediction", Float(53)),
    Column("label", Text),
    Column("scores", ARRAY(Float(53))),
    postgresql_partition_by="LIST (run_id)",
)

# The serving directory: the prediction each (model, role, entity) is served, copied from the most
# recently published run that holds the entity. `store.predictions.publish` keeps it in the publish
# transaction, so a lookup is one B-tree probe whatever the number of runs the store keeps; its
# columns are those of the ``published_predictions`` view, in that order.
served_predictions = Table(
    "served_predictions",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("model_version", Integer, nullable=False),
    Column("run_id", BigInteger, nullable=False),
    Column("partition_key", Text, nullable=False),
    Column("entity_id", Text(collation="C"), primary_key=True),
    Column("row_number", BigInteger, nullable=False),
    Column("prediction", Float(53)),
    Column("label", Text),
    Column("scores", ARRAY(Float(53))),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("role", Text, primary_key=True),
    # Room on each page for the next publish's version of a row: its update stays on the page (HOT).
    postgresql_with={"fillfactor": 70},
)

# Retention by age: each model's published runs are dropped (status 'expired') once older than
# keep_days; without a row here, PREDSTORE_KEEP_DAYS applies (unset: kept for ever).
retention = Table(
    "retention",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("keep_days", Integer),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("keep_days > 0", name="keep_days"),
)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("row_number", BigInteger, primary_key=True),
    Column("entity_id", Text),
    Column("reason", Text, nullable=False),
    Column("raw", JSONB),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)

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

# What a version's performance estimates need (`batch.calibration`), fitted at registration on
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

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    # sha256 of the whole key: keys are 256-bit random, so a fast hash cannot be brute-forced.
    Column("key_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

#: Why a scheduler firing ran: its cron time came (``catch-up`` when it runs late, after the
#: scheduler was down), a poll found new partitions, or the monitor raised an alert.
FIRING_REASONS = ("cron", "catch-up", "arrival", "alert")
FIRING_STATUSES = ("running", "succeeded", "failed", "abandoned")

job_firings = Table(
    "job_firings",
    metadata,
    Column("firing_id", BigInteger, Identity(), primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    # The cron time this firing stands for; NULL for arrivals and alerts. Unique per job, so two
    # scheduler replicas never run the same cron firing: the second INSERT finds it claimed.
    Column("scheduled_for", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="running"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("host", Text),
    Column("pid", Integer),
    Column("error", Text),
    Column("details", JSONB),
    CheckConstraint("reason IN " + str(FIRING_REASONS), name="reason"),
    CheckConstraint("status IN " + str(FIRING_STATUSES), name="status"),
    Index("uq_job_firings_job_id_scheduled_for", "job_id", "scheduled_for", unique=True),
    Index("ix_job_firings_job_id_firing_id", "job_id", "firing_id"),
)

# Monitoring: histograms frozen at registration, and each run's counts in the same bins
# (see batch/profile.py for the bin layout).
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
ALERT_KINDS = ("data_drift", "prediction_drift", "concept_drift", "estimated_performance", "gradual_drift")

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

# Hardening (migration 0007): the models an API key may read (NULL: every model), and the audit
# trail of registrations, promotions, API key changes and erasures (`predstore forget`).
api_keys.append_column(Column("models", ARRAY(Text)))

AUDIT_ACTIONS = ("model.register", "model.promote", "apikey.create", "apikey.revoke", "entity.forget")

audit = Table(
    "audit",
    metadata,
    Column("audit_id", BigInteger, Identity(), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The operating-system user who ran the command, else the database role.
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    # What was acted on: 'churn v3', an API key id, or for an erasure the keyed HMAC of the entity id.
    Column("target", Text),
    Column("details", JSONB),
    Index("ix_audit_action_at", "action", "at"),
)

# Safety (migration 0011): the erasure list that `predstore forget` keeps, which scoring applies
# (an erased entity's rows are rejected as 'erased'), and the key of its HMAC-SHA256s: one row,
# generated by the migration; neither the reader nor the analyst role may read it.
erasure_key = Table(
    "erasure_key",
    metadata,
    Column("one", Boolean, primary_key=True, server_default=text("true")),
    Column("key", LargeBinary, nullable=False),
    CheckConstraint("one", name="one_row"),
)

erasures = Table(
    "erasures",
    metadata,
    Column("entity_hmac", LargeBinary, primary_key=True),
    # The model it was erased from; '' for every model.
    Column("model_name", Text, primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The types of a skops version that skops does not trust by default, each reviewed (--trust-type)
# and trusted when it was loaded at registration: exactly what loading that version may trust.
models.append_column(Column("trusted_types", ARRAY(Text)))

# A version registered from MLflow (migration 0012): the URI it was fetched from, fixed to what it
# resolved to (models:/churn/3, not the alias models:/churn@champion), and the MLflow registry's
# version number; NULL for a version registered from a file.
models.append_column(Column("mlflow_uri", Text))
models.append_column(Column("mlflow_version", Integer))
