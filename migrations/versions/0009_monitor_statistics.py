"""monitor statistics: held-out output baselines, bin sums, sequential drift

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

``baselines.source``: what each histogram was counted on ('training' for features; 'validation',
'cross_validation' or 'in_sample' for outputs). Baselines recorded before are marked as they were
made: outputs in-sample. ``baselines.sums`` and ``run_profiles.sums``: per-bin sums of numeric
values, NULL where they were not recorded (the monitor then says it cannot compute Wasserstein).
Alert kind ``gradual_drift``: a small persistent shift found across runs (CUSUM).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ('data_drift', 'prediction_drift', 'concept_drift', 'estimated_performance')


def upgrade() -> None:
    op.add_column('baselines', sa.Column('sums', postgresql.ARRAY(sa.Float(precision=53)), nullable=True))
    op.add_column('baselines', sa.Column('source', sa.Text(), server_default='training', nullable=False))
    op.execute("UPDATE baselines SET source = 'in_sample' WHERE role = 'output'")
    op.create_check_constraint(op.f('ck_baselines_source'), 'baselines',
                               "source IN ('training', 'validation', 'cross_validation', 'in_sample')")
    op.add_column('run_profiles', sa.Column('sums', postgresql.ARRAY(sa.Float(precision=53)), nullable=True))
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {(*KINDS, 'gradual_drift')}")


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE kind = 'gradual_drift'")
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {KINDS}")
    op.drop_column('run_profiles', 'sums')
    op.drop_constraint(op.f('ck_baselines_source'), 'baselines', type_='check')
    op.drop_column('baselines', 'source')
    op.drop_column('baselines', 'sums')
