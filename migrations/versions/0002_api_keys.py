"""api keys and the published_runs view

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

API keys for the lookup API (stored hashed), and `published_runs`: the published rows of the
ledger, which the lookup API's read-only role may see instead of the whole `runs` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PUBLISHED_RUNS = """
    SELECT run_id, model_name, model_version, partition_key, rows_scored - rows_duplicate AS rows,
           finished_at AS scored_at, published_at
    FROM runs
    WHERE status = 'published'
"""


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('key_hash', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_api_keys'))
    )
    op.execute(f"CREATE VIEW published_runs AS {PUBLISHED_RUNS}")


def downgrade() -> None:
    op.execute("DROP VIEW published_runs")
    op.drop_table('api_keys')
