"""The store's tables, as SQLAlchemy Core metadata: the source of truth that migrations must match.

`alembic check` (run in CI) fails when this module and ``migrations/versions`` disagree.
Views are plain SQL in the migrations; their column lists are documented in docs/sql.md
and docs/monitoring.md.
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
    LargeBinary,
    MetaData,
    Sequence,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from store.names import PARTITION_SCHEMA, SEGMENT_SCHEMA, run_table  # noqa: F401  (re-exported)

#: Longest entity id stored: scoring rejects longer ones, and the lookup API refuses them.
MAX_ENTITY_ID_LENGTH = 512


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
RUN_STATUSES = ("running", "published", "superseded", "skipped", "failed", "abandoned", "dropped", "expired",
                "held", "discarded")

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

# The serving directory (`store.serving`): per (model, version), a segment: for each entity the row of
# the newest run of the version's set that holds it. One table per segment, attached here by its id;
# a lookup probes the unique index (entity_id) of each segment its model ranks, never one per run.
served_predictions = Table(
    "served_predictions",
    metadata,
    Column("segment_id", BigInteger, nullable=False),
    Column("entity_id", Text(collation="C"), nullable=False),
    Column("run_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    Column("prediction", Float(53)),
    Column("label", Text),
    Column("scores", ARRAY(Float(53))),
    postgresql_partition_by="LIST (segment_id)",
)

serving_segment_ids = Sequence("serving_segment_ids", metadata=metadata)

# Which segment table serves each (model, version), and its rank in the model's serving order:
# 0 for the current version, then the versions current before it; NULL when not served (a
# challenger, or a version a snapshot of the current one cut off).
serving_segments = Table(
    "serving_segments",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("segment_id", BigInteger, nullable=False, unique=True),
    Column("rank", Integer),
    Column("rows", BigInteger, nullable=False, server_default="0"),
    # The version's latest snapshot run: the entities it lacks are not served.
    Column("snapshot_run_id", BigInteger),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
)

# Segment tables a rebuild replaced, with the rebuild's transaction id (migration 0016):
# `serving.drop_retired` detaches one only once no snapshot older than that transaction's commit is
# left, so no lookup whose snapshot points at it misses it.
retired_segments = Table(
    "retired_segments",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),
    Column("retired_xid", BigInteger, nullable=False),
)

# A snapshot run (migration 0013) declares the version's whole served set.
runs.append_column(Column("snapshot", Boolean, nullable=False, server_default="false"))

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

# Hardening (migration 0007): the models an API key may read (NULL: every model), and the audit
# trail of registrations, promotions, API key changes and erasures (`predstore forget`).
api_keys.append_column(Column("models", ARRAY(Text)))
# What a key may do beyond lookups (migration 0017): "score" is live scoring; NULL, lookups only.
api_keys.append_column(Column("scopes", ARRAY(Text)))

AUDIT_ACTIONS = ("model.register", "model.promote", "apikey.create", "apikey.revoke", "entity.forget",
                 "model.configure", "run.release", "run.discard", "model.retrain", "model.retire")

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

# Each model's policies (migration 0014), set with `predstore models configure`: whether its runs
# pass the publish gate before they are served (`batch/gate.py`), and the gate's row-count limit.
model_policies = Table(
    "model_policies",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("gate", Boolean, nullable=False, server_default="false"),
    Column("max_row_change", Float(53)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("max_row_change > 0", name="max_row_change"),
    # What a batch lookup with rows does for an entity the store has no prediction of (migration 0017):
    # '404' (NULL means the same) or 'score' (live).
    Column("on_miss", Text),
    CheckConstraint("on_miss IN ('404', 'score')", name="on_miss"),
)

# What the lookup API scored live (migration 0017): a row per prediction, for analysts and monitoring.
live_predictions = Table(
    "live_predictions",
    metadata,
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("entity_id", Text(collation="C"), nullable=False),
    Column("prediction", Float(53)),
    Column("label", Text),
    Column("scores", ARRAY(Float(53))),
    # The row's features as validated (migration 0019; NULL before): the monitor checks their drift.
    Column("features", JSONB),
    Index("ix_live_predictions_model_scored_at", "model_name", "scored_at"),
    Index("ix_live_predictions_model_entity", "model_name", "entity_id", "scored_at"),
)

# Change notices (migration 0015, `store.notices`): per (channel, payload), how many changes NOTIFY
# told, bumped in the same transaction, for lookup services that read a standby (which refuses LISTEN).
notices = Table(
    "notices",
    metadata,
    Column("channel", Text, primary_key=True),
    Column("payload", Text, primary_key=True),
    Column("n", BigInteger, nullable=False, server_default="0"),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What the lookup API answered, per model and hour (`store.lookups.add_counts`): the monitor's miss rate.
lookup_counts = Table(
    "lookup_counts",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("hits", BigInteger, nullable=False, server_default="0"),
    Column("misses", BigInteger, nullable=False, server_default="0"),
    Column("stale", BigInteger, nullable=False, server_default="0"),
)

# The monitor's tables are declared on the same metadata, in a module of their own.
from store import schema_monitoring  # noqa: E402,F401
