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
