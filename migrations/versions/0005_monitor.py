"""monitor results and alerts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Drift checks (one per run or window of runs) and their per-feature, per-metric results; realized
and estimated performance per run and time window; the alerts raised; and the analyst views
drift_over_time, latest_drift and performance_over_time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


METRIC_COLUMNS = ("psi", "jensen_shannon", "wasserstein", "ks", "cramers_v", "null_rate_change", "unseen_share")

VIEWS = {
    # One row per drift check and column, its metrics side by side; the run's partition and
    # publication time when the check is of one run. ``run_role``: 'current' (served) or 'challenger'.
    "drift_over_time": f"""
        SELECT c.model_name, c.model_version, c.check_id, c.scope, c.run_role, c.run_id, r.partition_key,
               r.published_at,
               c.window_start, c.window_end, c.computed_at, d.column_name, d.role, d.kind,
               {", ".join(f"max(d.value) FILTER (WHERE d.metric = '{m}') AS {m}" for m in METRIC_COLUMNS)},
               max(d.value) FILTER (WHERE d.metric IN ('ks_p_value', 'chi2_p_value')) AS p_value,
               bool_or(d.metric = 'drift' AND d.status = 'alert') AS drifted,
               max(d.status) FILTER (WHERE d.metric = 'drift') AS status
        FROM drift_checks c
        JOIN drift_results d ON d.check_id = c.check_id
        LEFT JOIN runs r ON r.run_id = c.run_id
        GROUP BY c.check_id, r.run_id, d.column_name, d.role, d.kind
    """,
    # Per model and column, the check of the most recently published run (of the served role).
    "latest_drift": """
        SELECT DISTINCT ON (model_name, column_name) *
        FROM drift_over_time
        WHERE scope = 'run' AND run_role = 'current'
        ORDER BY model_name, column_name, published_at DESC NULLS LAST, run_id DESC
    """,
    # Realized (and, for classifiers, estimated) performance per run and time window, with coverage.
    "performance_over_time": """
        SELECT model_name, model_version, scope, run_role, run_id, window_start, window_end, metric, value,
               training_value, value - training_value AS change, estimated, status, labels, predictions,
               coverage, computed_at
        FROM performance_results
    """,
}


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('alert_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('scope_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('raised_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivery_error', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('data_drift', 'prediction_drift', 'concept_drift', 'estimated_performance')", name=op.f('ck_alerts_kind')),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_alerts'))
    )
    op.create_index('uq_alerts_model_name_kind_scope_key', 'alerts', ['model_name', 'kind', 'scope_key'], unique=True)
    op.create_table('drift_checks',
    sa.Column('check_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('run_ids', postgresql.ARRAY(sa.BigInteger()), nullable=False),
    sa.Column('run_role', sa.Text(), server_default='current', nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rows', sa.BigInteger(), nullable=False),
    sa.Column('features', sa.Integer(), nullable=False),
    sa.Column('drifted', sa.Integer(), nullable=False),
    sa.Column('drift_share', sa.Float(precision=53), nullable=True),
    sa.Column('dataset_drift', sa.Boolean(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("scope IN ('run', 'window')", name=op.f('ck_drift_checks_scope')),
    sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'], name=op.f('fk_drift_checks_model_name_model_version_models')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_drift_checks_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('check_id', name=op.f('pk_drift_checks'))
    )
    op.create_index('ix_drift_checks_model_name_computed_at', 'drift_checks', ['model_name', 'computed_at'], unique=False)
    op.create_index('uq_drift_checks_run_id', 'drift_checks', ['run_id'], unique=True, postgresql_where=sa.text("scope = 'run'"))
    op.create_table('performance_results',
    sa.Column('result_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('run_role', sa.Text(), server_default='current', nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=True),
    sa.Column('training_value', sa.Float(precision=53), nullable=True),
    sa.Column('estimated', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('labels', sa.BigInteger(), nullable=False),
    sa.Column('predictions', sa.BigInteger(), nullable=True),
    sa.Column('coverage', sa.Float(precision=53), nullable=True),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("scope IN ('run', 'window')", name=op.f('ck_performance_results_scope')),
    sa.CheckConstraint("status IN ('ok', 'warning', 'alert', 'n/a')", name=op.f('ck_performance_results_status')),
    sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'], name=op.f('fk_performance_results_model_name_model_version_models')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_performance_results_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('result_id', name=op.f('pk_performance_results'))
    )
    op.create_index('ix_performance_results_model_name_scope_window_start', 'performance_results', ['model_name', 'scope', 'window_start'], unique=False)
    op.create_table('drift_results',
    sa.Column('check_id', sa.BigInteger(), nullable=False),
    sa.Column('column_name', sa.Text(), nullable=False),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=True),
    sa.Column('warning', sa.Float(precision=53), nullable=True),
    sa.Column('alert', sa.Float(precision=53), nullable=True),
    sa.Column('status', sa.Text(), nullable=False),
    sa.CheckConstraint("status IN ('ok', 'warning', 'alert', 'n/a')", name=op.f('ck_drift_results_status')),
    sa.ForeignKeyConstraint(['check_id'], ['drift_checks.check_id'], name=op.f('fk_drift_results_check_id_drift_checks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('check_id', 'column_name', 'metric', name=op.f('pk_drift_results'))
    )
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_table('drift_results')
    op.drop_index('ix_performance_results_model_name_scope_window_start', table_name='performance_results')
    op.drop_table('performance_results')
    op.drop_index('uq_drift_checks_run_id', table_name='drift_checks', postgresql_where=sa.text("scope = 'run'"))
    op.drop_index('ix_drift_checks_model_name_computed_at', table_name='drift_checks')
    op.drop_table('drift_checks')
    op.drop_index('uq_alerts_model_name_kind_scope_key', table_name='alerts')
    op.drop_table('alerts')
