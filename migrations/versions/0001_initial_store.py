"""initial store

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The registry, the run ledger, predictions partitioned by run, rejected rows, labels,
and the analyst views over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


VIEWS = {
    # Every row of every published run, with the run's model, version and partition.
    "published_predictions": """
        SELECT r.model_name, r.model_version, r.run_id, r.partition_key, p.entity_id, p.row_number,
               p.prediction, p.label, p.scores, r.finished_at AS scored_at, r.published_at
        FROM runs r JOIN predictions p ON p.run_id = r.run_id
        WHERE r.status = 'published'
    """,
    # The newest published prediction per model and entity (the one the lookup API serves).
    "current_predictions": """
        SELECT DISTINCT ON (model_name, entity_id) *
        FROM published_predictions
        ORDER BY model_name, entity_id, published_at DESC, run_id DESC
    """,
    "run_summary": """
        SELECT run_id, job_kind, model_name, model_version, partition_key, status,
               rows_in, rows_scored, rows_rejected, rows_duplicate,
               round(rows_rejected::numeric / nullif(rows_in, 0), 4) AS reject_fraction,
               started_at, finished_at, published_at, duration_s, rows_per_s, peak_rss_bytes,
               cpu_seconds, input_uri, error
        FROM runs
    """,
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS predstore_partitions")
    op.create_table('labels',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('entity_id', sa.Text(), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('label_value', sa.Float(precision=53), nullable=True),
    sa.Column('arrival_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('model_name', 'entity_id', 'event_time', name=op.f('pk_labels'))
    )
    op.create_table('models',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('artifact_uri', sa.Text(), nullable=False),
    sa.Column('sha256', sa.Text(), nullable=False),
    sa.Column('format', sa.Text(), nullable=False),
    sa.Column('flavor', sa.Text(), server_default='sklearn', nullable=False),
    sa.Column('task', sa.Text(), nullable=False),
    sa.Column('feature_schema', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('classes', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('training_metrics', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("format IN ('joblib', 'skops')", name=op.f('ck_models_format')),
    sa.CheckConstraint("task IN ('classification', 'regression')", name=op.f('ck_models_task')),
    sa.PrimaryKeyConstraint('name', 'version', name=op.f('pk_models'))
    )
    op.create_table('predictions',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('entity_id', sa.Text(collation='C'), nullable=False),
    sa.Column('row_number', sa.BigInteger(), nullable=False),
    sa.Column('prediction', sa.Float(precision=53), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'entity_id', name=op.f('pk_predictions')),
    postgresql_partition_by='LIST (run_id)'
    )
    op.create_table('model_aliases',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('alias', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['model_name', 'version'], ['models.name', 'models.version'], name=op.f('fk_model_aliases_model_name_version_models')),
    sa.PrimaryKeyConstraint('model_name', 'alias', name=op.f('pk_model_aliases'))
    )
    op.create_table('runs',
    sa.Column('run_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_kind', sa.Text(), server_default='score', nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('model_sha256', sa.Text(), nullable=True),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('input_uri', sa.Text(), nullable=False),
    sa.Column('input_fingerprint', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('rows_in', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rows_scored', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rows_rejected', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rows_duplicate', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_s', sa.Float(precision=53), nullable=True),
    sa.Column('rows_per_s', sa.Float(precision=53), nullable=True),
    sa.Column('peak_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('cpu_seconds', sa.Float(precision=53), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('code_version', sa.Text(), nullable=True),
    sa.Column('host', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('predictions_digest', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("status IN ('running', 'published', 'superseded', 'skipped', 'failed', 'abandoned', 'dropped')", name=op.f('ck_runs_status')),
    sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'], name=op.f('fk_runs_model_name_model_version_models')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_runs'))
    )
    op.create_index('ix_runs_model_name_started_at', 'runs', ['model_name', 'started_at'], unique=False)
    op.create_index('uq_runs_published', 'runs', ['model_name', 'partition_key'], unique=True, postgresql_where=sa.text("status = 'published'"))
    op.create_index('uq_runs_running', 'runs', ['model_name', 'partition_key'], unique=True, postgresql_where=sa.text("status = 'running'"))
    op.create_table('rejected_rows',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('row_number', sa.BigInteger(), nullable=False),
    sa.Column('entity_id', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_rejected_rows_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'row_number', name=op.f('pk_rejected_rows'))
    )
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_table('rejected_rows')
    op.drop_index('uq_runs_running', table_name='runs', postgresql_where=sa.text("status = 'running'"))
    op.drop_index('uq_runs_published', table_name='runs', postgresql_where=sa.text("status = 'published'"))
    op.drop_index('ix_runs_model_name_started_at', table_name='runs')
    op.drop_table('runs')
    op.drop_table('model_aliases')
    op.drop_table('predictions')
    op.drop_table('models')
    op.drop_table('labels')
    op.execute("DROP SCHEMA predstore_partitions CASCADE")
