"""serving: one row per (model, entity, role) for constant-cost lookups; retention by age

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

``served_predictions`` holds, for each (model, entity, role), the row of the most recently
published run that holds the entity: the lookup API probes its primary key once, however many
runs and partitions the store keeps. It is filled here from the runs already published and kept
by every publish from now on. ``current_predictions`` reads it (same columns). ``retention`` holds
each model's ``keep_days``; runs dropped by age end ``expired``. Each run's table is keyed by a
unique index on ``entity_id`` alone instead of the parent's (run_id, entity_id) key.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("model_name, model_version, run_id, partition_key, entity_id, row_number, prediction, label, scores, "
           "scored_at, published_at, role")
STATUSES = ('running', 'published', 'superseded', 'skipped', 'failed', 'abandoned', 'dropped')
CURRENT_PREDICTIONS_0006 = """
    SELECT DISTINCT ON (model_name, entity_id) *
    FROM published_predictions
    WHERE role = 'current'
    ORDER BY model_name, entity_id, published_at DESC, run_id DESC
"""


def _run_tables() -> list[str]:
    rows = op.get_bind().execute(sa.text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'predstore_partitions' AND tablename ~ '^run_[0-9]+$'"))
    return [r[0] for r in rows]


def upgrade() -> None:
    # Dropping the parent's key drops its partitions' keys; unattached run tables have their own.
    op.drop_constraint(op.f('pk_predictions'), 'predictions', type_='primary')
    for table in _run_tables():
        run_id = table.removeprefix('run_')
        op.execute(f'ALTER TABLE predstore_partitions.{table} DROP CONSTRAINT IF EXISTS pk_run_{run_id}')
        op.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS uq_run_{run_id} ON predstore_partitions.{table} (entity_id)')
    op.create_table('served_predictions',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('entity_id', sa.Text(collation='C'), nullable=False),
    sa.Column('row_number', sa.BigInteger(), nullable=False),
    sa.Column('prediction', sa.Float(precision=53), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('model_name', 'entity_id', 'role', name=op.f('pk_served_predictions')),
    postgresql_with={'fillfactor': 70}
    )
    op.execute(f"""
        INSERT INTO served_predictions ({COLUMNS})
        SELECT DISTINCT ON (model_name, entity_id, role) {COLUMNS.replace('scored_at', 'coalesce(scored_at, published_at)')}
        FROM published_predictions
        ORDER BY model_name, entity_id, role, published_at DESC, run_id DESC
    """)
    op.execute(f"CREATE OR REPLACE VIEW current_predictions AS "
               f"SELECT {COLUMNS} FROM served_predictions WHERE role = 'current'")
    op.create_table('retention',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('keep_days', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('keep_days > 0', name=op.f('ck_retention_keep_days')),
    sa.PrimaryKeyConstraint('model_name', name=op.f('pk_retention'))
    )
    op.drop_constraint(op.f('ck_runs_status'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_status'), 'runs', f"status IN {(*STATUSES, 'expired')}")


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'dropped' WHERE status = 'expired'")
    op.drop_constraint(op.f('ck_runs_status'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_status'), 'runs', f"status IN {STATUSES}")
    op.drop_table('retention')
    op.execute(f"CREATE OR REPLACE VIEW current_predictions AS {CURRENT_PREDICTIONS_0006}")
    op.drop_table('served_predictions')
    for table in _run_tables():
        op.execute(f"DROP INDEX IF EXISTS predstore_partitions.uq_run_{table.removeprefix('run_')}")
    op.create_primary_key(op.f('pk_predictions'), 'predictions', ['run_id', 'entity_id'])
