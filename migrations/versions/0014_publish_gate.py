"""publish gate: held runs, each model's policies, the held_run alert

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

A run that fails the publish gate ends ``held`` (its table kept, unattached: nothing of it is
served) until `predstore runs release` publishes it or `predstore runs discard` drops it
(``discarded``). ``model_policies`` holds what `predstore models configure` sets: whether the
model's runs pass the gate, and its row-count limit. Alert kind ``held_run``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | Sequence[str] | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ('running', 'published', 'superseded', 'skipped', 'failed', 'abandoned', 'dropped', 'expired')
KINDS = ('data_drift', 'prediction_drift', 'concept_drift', 'estimated_performance', 'gradual_drift')


def upgrade() -> None:
    op.drop_constraint(op.f('ck_runs_status'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_status'), 'runs', f"status IN {(*STATUSES, 'held', 'discarded')}")
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {(*KINDS, 'held_run')}")
    op.create_table('model_policies',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('gate', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('max_row_change', sa.Float(precision=53), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('max_row_change > 0', name=op.f('ck_model_policies_max_row_change')),
    sa.PrimaryKeyConstraint('model_name', name=op.f('pk_model_policies'))
    )


def downgrade() -> None:
    op.drop_table('model_policies')
    op.execute("DELETE FROM alerts WHERE kind = 'held_run'")
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {KINDS}")
    op.execute("UPDATE runs SET status = 'failed', error = 'held by the publish gate' WHERE status = 'held'")
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'discarded'")
    op.drop_constraint(op.f('ck_runs_status'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_status'), 'runs', f"status IN {STATUSES}")
