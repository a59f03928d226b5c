"""monitor statistics: held-out output baselines, bin sums, sequential drift

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

``baselines.source``: what each histogram was counted on ('training' for features; 'validation',
'cross_validation' or 'in_sample' for outputs). Baselines recorded before are marked as they were
made: outputs in-sample. ``baselines.sums`` and ``run_profiles.sums``: per-bin sums of numeric
values, NULL where they were not recorded (the monitor then says it cannot compute Wasserstein).
Alert kind ``gradual_drift``: a small persistent shift found across runs (CUSUM). The views
``drift_over_time`` and ``latest_drift`` gain Cohen's w, the corrected p-value and the CUSUMs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ('data_drift', 'prediction_drift', 'concept_drift', 'estimated_performance')
ADDED_METRICS = ('cohens_w', 'p_adjusted', 'cusum_up', 'cusum_down')


def _views_of_0005() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("monitor_0005", Path(__file__).with_name("0005_monitor.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.VIEWS)


def _drift_over_time() -> str:
    """0005's view with the new metrics appended (a view may only grow at its end)."""
    added = ", ".join(f"max(d.value) FILTER (WHERE d.metric = '{m}') AS {m}" for m in ADDED_METRICS)
    old = _views_of_0005()["drift_over_time"]
    return old.replace("        FROM drift_checks c", f"               , {added}\n        FROM drift_checks c")


def upgrade() -> None:
    op.add_column('baselines', sa.Column('sums', postgresql.ARRAY(sa.Float(precision=53)), nullable=True))
    op.add_column('baselines', sa.Column('source', sa.Text(), server_default='training', nullable=False))
    op.execute("UPDATE baselines SET source = 'in_sample' WHERE role = 'output'")
    op.create_check_constraint(op.f('ck_baselines_source'), 'baselines',
                               "source IN ('training', 'validation', 'cross_validation', 'in_sample')")
    op.add_column('run_profiles', sa.Column('sums', postgresql.ARRAY(sa.Float(precision=53)), nullable=True))
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {(*KINDS, 'gradual_drift')}")
    op.execute(f"CREATE OR REPLACE VIEW drift_over_time AS {_drift_over_time()}")
    op.execute(f"CREATE OR REPLACE VIEW latest_drift AS {_views_of_0005()['latest_drift']}")


def downgrade() -> None:
    views = _views_of_0005()
    op.execute("DROP VIEW latest_drift")
    op.execute("DROP VIEW drift_over_time")
    op.execute(f"CREATE VIEW drift_over_time AS {views['drift_over_time']}")
    op.execute(f"CREATE VIEW latest_drift AS {views['latest_drift']}")
    op.execute("DELETE FROM alerts WHERE kind = 'gradual_drift'")
    op.drop_constraint(op.f('ck_alerts_kind'), 'alerts', type_='check')
    op.create_check_constraint(op.f('ck_alerts_kind'), 'alerts', f"kind IN {KINDS}")
    op.drop_column('run_profiles', 'sums')
    op.drop_constraint(op.f('ck_baselines_source'), 'baselines', type_='check')
    op.drop_column('baselines', 'source')
    op.drop_column('baselines', 'sums')
