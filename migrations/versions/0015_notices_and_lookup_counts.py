"""notices and lookup counts: lookup services on a hot standby, and what lookups found

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

``notices`` counts, per (channel, payload), the changes told by NOTIFY (a model's answers, an API
key), bumped in the same transaction: a lookup service reading a hot standby, where LISTEN is
refused, polls it. ``lookup_counts`` holds per model and hour the answers the lookup API gave: hits,
misses (an entity with no prediction served) and stale answers; the monitor's ``miss_rate`` check
reads it. The roles that read the serving directory may read ``notices`` and add to ``lookup_counts``.
Alert kind ``miss_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | Sequence[str] | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ('data_drift', 'prediction_drift', 'concept_drift', 'estimated_performance', 'gradual_drift', 'held_run')


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table('notices',
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('n', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'payload', name=op.f('pk_notices'))
    )
    op.create_table('lookup_counts',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hits', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('misses', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('stale', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('model_name', 'hour', name=op.f('pk_lookup_counts'))
    )
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {(*KINDS, 'miss_rate')}")
    readers = [r[0] for r in bind.execute(sa.text(
        """SELECT DISTINCT grantee FROM information_schema.role_table_grants
           WHERE table_schema = 'public' AND table_name = 'served_predictions' AND privilege_type = 'SELECT'
             AND grantee <> current_user"""))]
    for role in readers:
        op.execute(f'GRANT SELECT ON notices TO "{role}"')
        op.execute(f'GRANT SELECT, INSERT, UPDATE ON lookup_counts TO "{role}"')


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE kind = 'miss_rate'")
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {KINDS}")
    op.drop_table('lookup_counts')
    op.drop_table('notices')
