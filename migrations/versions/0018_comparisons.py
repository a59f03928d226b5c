"""comparisons: every champion/challenger comparison made, kept for the console and the audit

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

``comparisons`` holds each comparison `predstore models compare`, `promote --if-better` and the
scheduler made: the versions, the verdict and the whole result as `models compare --json` prints
it. `predstore ui` shows the newest one of the versions serving and challenging now, without
reading the paired predictions again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0018'
down_revision: str | Sequence[str] | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('comparisons',
    sa.Column('comparison_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('challenger_version', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.Text(), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('comparison_id', name=op.f('pk_comparisons'))
    )
    op.create_index('ix_comparisons_model_name_comparison_id', 'comparisons', ['model_name', 'comparison_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_comparisons_model_name_comparison_id', table_name='comparisons')
    op.drop_table('comparisons')
