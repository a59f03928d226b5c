"""hardening: API keys scoped to models, and the audit table

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

``api_keys.models``: the models a key may read (NULL: every model). ``audit``: who registered or
promoted a model, created or revoked an API key, or erased an entity (`predstore forget`), when.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('api_keys', sa.Column('models', postgresql.ARRAY(sa.Text()), nullable=True))
    op.create_table('audit',
    sa.Column('audit_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('audit_id', name=op.f('pk_audit'))
    )
    op.create_index('ix_audit_action_at', 'audit', ['action', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_action_at', table_name='audit')
    op.drop_table('audit')
    op.drop_column('api_keys', 'models')
