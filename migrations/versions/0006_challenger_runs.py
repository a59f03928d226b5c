"""challenger runs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

A run's role: 'current' (the served run of its partition) or 'challenger' (scored beside it with
the challenger model version, served only when asked for by version). A partition may now have
one published run per role; the views gain the role, and `current_predictions` serves only
current runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# CREATE OR REPLACE VIEW may only add columns at the end, which keeps the grants and the views
# built on these.
PUBLISHED_PREDICTIONS = """
    SELECT r.model_name, r.model_version, r.run_id, r.partition_key, p.entity_id, p.row_number,
           p.prediction, p.label, p.scores, r.finished_at AS scored_at, r.published_at, r.role
    FROM runs r JOIN predictions p ON p.run_id = r.run_id
    WHERE r.status = 'published'
"""
CURRENT_PREDICTIONS = """
    SELECT DISTINCT ON (model_name, entity_id) *
    FROM published_predictions
    WHERE role = 'current'
    ORDER BY model_name, entity_id, published_at DESC, run_id DESC
"""
PUBLISHED_RUNS = """
    SELECT run_id, model_name, model_version, partition_key, rows_scored - rows_duplicate AS rows,
           finished_at AS scored_at, published_at, role
    FROM runs
    WHERE status = 'published'
"""
RUN_SUMMARY = """
    SELECT run_id, job_kind, model_name, model_version, partition_key, status,
           rows_in, rows_scored, rows_rejected, rows_duplicate,
           round(rows_rejected::numeric / nullif(rows_in, 0), 4) AS reject_fraction,
           started_at, finished_at, published_at, duration_s, rows_per_s, peak_rss_bytes,
           cpu_seconds, input_uri, error, role
    FROM runs
"""


def upgrade() -> None:
    op.add_column('runs', sa.Column('role', sa.Text(), server_default='current', nullable=False))
    op.create_check_constraint(op.f('ck_runs_role'), 'runs', "role IN ('current', 'challenger')")
    for name, status in (('uq_runs_running', 'running'), ('uq_runs_published', 'published')):
        op.drop_index(name, table_name='runs')
        op.create_index(name, 'runs', ['model_name', 'partition_key', 'role'], unique=True,
                        postgresql_where=sa.text(f"status = '{status}'"))
    op.execute(f"CREATE OR REPLACE VIEW published_predictions AS {PUBLISHED_PREDICTIONS}")
    op.execute(f"CREATE OR REPLACE VIEW current_predictions AS {CURRENT_PREDICTIONS}")
    op.execute(f"CREATE OR REPLACE VIEW published_runs AS {PUBLISHED_RUNS}")
    op.execute(f"CREATE OR REPLACE VIEW run_summary AS {RUN_SUMMARY}")


def downgrade() -> None:
    # A view cannot lose a column in place: drop and rebuild each as it was before.
    for name in ("current_predictions", "published_predictions", "published_runs", "run_summary"):
        op.execute(f"DROP VIEW {name}")
    op.execute(f"CREATE VIEW published_predictions AS {_without_role(PUBLISHED_PREDICTIONS)}")
    op.execute("CREATE VIEW current_predictions AS " + CURRENT_PREDICTIONS.replace("WHERE role = 'current'", ""))
    op.execute(f"CREATE VIEW published_runs AS {_without_role(PUBLISHED_RUNS)}")
    op.execute(f"CREATE VIEW run_summary AS {_without_role(RUN_SUMMARY)}")
    for name, status in (('uq_runs_running', 'running'), ('uq_runs_published', 'published')):
        op.drop_index(name, table_name='runs')
        op.create_index(name, 'runs', ['model_name', 'partition_key'], unique=True,
                        postgresql_where=sa.text(f"status = '{status}'"))
    op.drop_constraint(op.f('ck_runs_role'), 'runs', type_='check')
    op.drop_column('runs', 'role')


def _without_role(view: str) -> str:
    return view.replace(", r.role", "").replace(", role", "")
