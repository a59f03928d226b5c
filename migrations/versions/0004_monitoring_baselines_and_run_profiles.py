"""monitoring baselines and run profiles

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Histograms frozen at registration (baselines) and each run's counts in the same bins
(run_profiles), from which the monitor computes drift without reading data again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # When a run stopped being the published one: labels are matched to the run published at
    # their event time.
    op.add_column('runs', sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('baselines',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('column_name', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('edges', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    sa.Column('categories', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('counts', postgresql.ARRAY(sa.BigInteger()), nullable=False),
    sa.Column('null_count', sa.BigInteger(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('mean', sa.Float(precision=53), nullable=True),
    sa.Column('std', sa.Float(precision=53), nullable=True),
    sa.Column('min', sa.Float(precision=53), nullable=True),
    sa.Column('max', sa.Float(precision=53), nullable=True),
    sa.CheckConstraint("kind IN ('numeric', 'categorical')", name=op.f('ck_baselines_kind')),
    sa.CheckConstraint("role IN ('feature', 'output')", name=op.f('ck_baselines_role')),
    sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'], name=op.f('fk_baselines_model_name_model_version_models')),
    sa.PrimaryKeyConstraint('model_name', 'model_version', 'column_name', name=op.f('pk_baselines'))
    )
    op.create_table('run_profiles',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('column_name', sa.Text(), nullable=False),
    sa.Column('counts', postgresql.ARRAY(sa.BigInteger()), nullable=False),
    sa.Column('null_count', sa.BigInteger(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('sum', sa.Float(precision=53), nullable=False),
    sa.Column('sum_sq', sa.Float(precision=53), nullable=False),
    sa.Column('min', sa.Float(precision=53), nullable=True),
    sa.Column('max', sa.Float(precision=53), nullable=True),
    sa.Column('unseen', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_run_profiles_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'column_name', name=op.f('pk_run_profiles'))
    )


def downgrade() -> None:
    op.drop_column('runs', 'superseded_at')
    op.drop_table('run_profiles')
    op.drop_table('baselines')
