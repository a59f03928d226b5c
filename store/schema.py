"""The store's tables, as SQLAlchemy Core metadata: the source of truth that migrations must match.

`alembic check` (run in CI) fails when this module and ``migrations/versions`` disagree.
Views are plain SQL in the migrations; their column lists are documented in the README.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

#: Schema holding one table per scoring run; each is attached to ``predictions`` when published.
PARTITION_SCHEMA = "predstore_partitions"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

RUN_STATUSES = ("running", "published", "superseded", "skipped", "failed", "abandoned", "dropped")

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
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    CheckConstraint("status IN " + str(RUN_STATUSES), name="status"),
    # One run at a time per (model, partition), and at most one published: publish flips both.
    Index(
        "uq_runs_running",
        "model_name",
        "partition_key",
        unique=True,
        postgresql_where=text("status = 'running'"),
    ),
    Index(
        "uq_runs_published",
        "model_name",
        "partition_key",
        unique=True,
        postgresql_where=text("status = 'published'"),
    ),
    Index("ix_runs_model_name_started_at", "model_name", "started_at"),
)

predictions = Table(
    "predictions",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("entity_id", Text(collation="C"), primary_key=True),
    Column("row_number", BigInteger, nullable=False),
    Column("prediction", Float(53)),
    Column("label", Text),
    Column("scores", ARRAY(Float(53))),
    postgresql_partition_by="LIST (run_id)",
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
    ForeignKeyConstraint(["model_name", "model_version"], ["models.name", "models.version"]),
    CheckConstraint("role IN ('feature', 'output')", name="role"),
    CheckConstraint("kind IN ('numeric', 'categorical')", name="kind"),
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
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)
