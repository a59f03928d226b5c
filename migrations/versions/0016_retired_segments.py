"""retired segments: the transaction that replaced each serving segment table

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

A rebuild points a (model, version) at a new segment table and records the replaced one here with
its own transaction id, in the same transaction. ``serving.drop_retired`` detaches the table only
once no transaction whose snapshot predates that one's commit is left (``pg_stat_activity.backend_xmin``):
a lookup whose snapshot points at the replaced table never finds it gone from its plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | Sequence[str] | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('retired_segments',
    sa.Column('segment_id', sa.BigInteger(), nullable=False),
    sa.Column('retired_xid', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('segment_id', name=op.f('pk_retired_segments'))
    )


def downgrade() -> None:
    op.drop_table('retired_segments')
