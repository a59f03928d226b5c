"""scheduler firings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

One row per scheduler firing (a cron time, a poll that found new data, an alert hook): why it
fired, what it did, its attempts and outcome. The unique (job_id, scheduled_for) is how two
scheduler replicas agree that a cron firing runs once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('job_firings',
    sa.Column('firing_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_id', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("reason IN ('cron', 'catch-up', 'arrival', 'alert')", name=op.f('ck_job_firings_reason')),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'abandoned')", name=op.f('ck_job_firings_status')),
    sa.PrimaryKeyConstraint('firing_id', name=op.f('pk_job_firings'))
    )
    op.create_index('ix_job_firings_job_id_firing_id', 'job_firings', ['job_id', 'firing_id'], unique=False)
    op.create_index('uq_job_firings_job_id_scheduled_for', 'job_firings', ['job_id', 'scheduled_for'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_job_firings_job_id_scheduled_for', table_name='job_firings')
    op.drop_index('ix_job_firings_job_id_firing_id', table_name='job_firings')
    op.drop_table('job_firings')
