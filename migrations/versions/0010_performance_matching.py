"""performance: labels matched once, incremental per-run statistics

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

``label_matches``: each label matched once per run role, with a copy of the prediction it is
judged against, so the match outlives a run whose table retention drops. ``labels.matched_at``:
NULL while a label waits to be matched (every label stored before this revision is matched again
by the next monitor run). ``performance_tallies``: per run, day and kind of match, the sums
realized performance is computed from. ``calibrations``: per version, what its expected-performance
estimates need, fitted on --validation-data at registration. ``performance_results`` gains the metric's interval
(``low``, ``high``), ``backfill`` and ``reference``; ``performance_over_time`` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = """
    SELECT model_name, model_version, scope, run_role, run_id, window_start, window_end, metric, value,
           training_value, value - training_value AS change, estimated, status, labels, predictions,
           coverage, computed_at{extra}
    FROM performance_results
"""


def upgrade() -> None:
    op.add_column('labels', sa.Column('matched_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_labels_model_name_unmatched', 'labels', ['model_name'], unique=False,
                    postgresql_where=sa.text('matched_at IS NULL'))
    op.create_table(
        'label_matches',
        sa.Column('model_name', sa.Text(), nullable=False),
        sa.Column('entity_id', sa.Text(), nullable=False),
        sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('run_role', sa.Text(), nullable=False),
        sa.Column('run_id', sa.BigInteger(), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('matched_as', sa.Text(), nullable=False),
        sa.Column('label', sa.Text(), nullable=False),
        sa.Column('label_value', sa.Float(precision=53), nullable=True),
        sa.Column('prediction', sa.Float(precision=53), nullable=True),
        sa.Column('predicted', sa.Text(), nullable=True),
        sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
        sa.Column('matched_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("matched_as IN ('in_force', 'latest_before', 'earliest')",
                           name=op.f('ck_label_matches_matched_as')),
        sa.PrimaryKeyConstraint('model_name', 'entity_id', 'event_time', 'run_role', name=op.f('pk_label_matches')),
    )
    op.create_index(op.f('ix_label_matches_run_id'), 'label_matches', ['run_id'], unique=False)
    op.create_table(
        'performance_tallies',
        sa.Column('run_id', sa.BigInteger(), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('backfill', sa.Boolean(), nullable=False),
        sa.Column('model_name', sa.Text(), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('run_role', sa.Text(), nullable=False),
        sa.Column('tally', postgresql.ARRAY(sa.Float(precision=53)), nullable=False),
        sa.Column('labels', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('run_id', 'day', 'backfill', name=op.f('pk_performance_tallies')),
    )
    op.create_index(op.f('ix_performance_tallies_model_name'), 'performance_tallies', ['model_name'], unique=False)
    op.create_table(
        'calibrations',
        sa.Column('model_name', sa.Text(), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('calibration', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'],
                                name=op.f('fk_calibrations_model_name_models'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('model_name', 'model_version', name=op.f('pk_calibrations')),
    )
    op.add_column('performance_results', sa.Column('low', sa.Float(precision=53), nullable=True))
    op.add_column('performance_results', sa.Column('high', sa.Float(precision=53), nullable=True))
    op.add_column('performance_results', sa.Column('backfill', sa.Boolean(), server_default='false',
                                                   nullable=False))
    op.add_column('performance_results', sa.Column('reference', sa.Text(), nullable=True))
    op.execute("CREATE OR REPLACE VIEW performance_over_time AS"
               + VIEW.format(extra=", low, high, backfill, reference"))


def downgrade() -> None:
    op.execute("DROP VIEW performance_over_time")
    op.execute("CREATE VIEW performance_over_time AS" + VIEW.format(extra=""))
    op.drop_column('performance_results', 'reference')
    op.drop_column('performance_results', 'backfill')
    op.drop_column('performance_results', 'high')
    op.drop_column('performance_results', 'low')
    op.drop_table('calibrations')
    op.drop_index(op.f('ix_performance_tallies_model_name'), table_name='performance_tallies')
    op.drop_table('performance_tallies')
    op.drop_index(op.f('ix_label_matches_run_id'), table_name='label_matches')
    op.drop_table('label_matches')
    op.drop_index('ix_labels_model_name_unmatched', table_name='labels',
                  postgresql_where=sa.text('matched_at IS NULL'))
    op.drop_column('labels', 'matched_at')
