"""serving segments: publish at bulk speed, serve the current version, snapshot runs

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

``served_predictions`` becomes a table partitioned by segment: one table per (model, version)
holding, per entity, the row of the newest run of the version's set (``store/serving.py`` says
which runs). ``serving_segments`` points each (model, version) at its table and ranks the model's
versions: the current version first, then the others by their newest published current-role run,
which serves what was served before the upgrade. ``runs.snapshot`` marks snapshot runs.
``served_runs`` is the run metadata a lookup joins (the reader role may read it);
``current_predictions`` gains ``version_current``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0013'
down_revision: str | Sequence[str] | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVED_RUNS = """
    SELECT run_id, model_name, model_version, partition_key, coalesce(finished_at, published_at) AS scored_at,
           published_at, role
    FROM runs WHERE published_at IS NOT NULL"""
CURRENT_PREDICTIONS = """
    SELECT DISTINCT ON (s.model_name, d.entity_id)
           s.model_name, s.model_version, d.run_id, r.partition_key, d.entity_id, d.row_number, d.prediction,
           d.label, d.scores, r.scored_at, r.published_at, r.role, s.rank = 0 AS version_current
    FROM serving_segments s
    JOIN served_predictions d ON d.segment_id = s.segment_id
    JOIN served_runs r ON r.run_id = d.run_id
    WHERE s.rank IS NOT NULL
    ORDER BY s.model_name, d.entity_id, s.rank"""
OLD_COLUMNS = ("model_name, model_version, run_id, partition_key, entity_id, row_number, prediction, label, scores, "
               "scored_at, published_at, role")
# The runs of one version's set, as store/serving.py defines it at this revision.
SET_RUNS = """
    SELECT r.run_id FROM runs r
    WHERE r.model_name = :model AND r.model_version = :version AND r.status IN ('published', 'superseded')
      AND NOT EXISTS (SELECT FROM runs n WHERE n.model_name = r.model_name AND n.model_version = r.model_version
                      AND n.partition_key = r.partition_key AND n.published_at > r.published_at)"""


def upgrade() -> None:
    bind = op.get_bind()
    # The roles that read the directory (`predstore db grant`) read the new one, and what it joins.
    readers = [r[0] for r in bind.execute(sa.text(
        """SELECT DISTINCT grantee FROM information_schema.role_table_grants
           WHERE table_schema = 'public' AND table_name = 'served_predictions' AND privilege_type = 'SELECT'
             AND grantee <> current_user"""))]
    op.add_column('runs', sa.Column('snapshot', sa.Boolean(), server_default='false', nullable=False))
    op.execute("DROP VIEW current_predictions")
    op.drop_table('served_predictions')
    op.execute("CREATE SCHEMA IF NOT EXISTS predstore_serving")
    op.execute(sa.schema.CreateSequence(sa.Sequence('serving_segment_ids')))
    op.create_table('served_predictions',
    sa.Column('segment_id', sa.BigInteger(), nullable=False),
    sa.Column('entity_id', sa.Text(collation='C'), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('row_number', sa.BigInteger(), nullable=False),
    sa.Column('prediction', sa.Float(precision=53), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    postgresql_partition_by='LIST (segment_id)'
    )
    op.create_table('serving_segments',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('segment_id', sa.BigInteger(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('snapshot_run_id', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['model_name', 'model_version'], ['models.name', 'models.version'],
                            name=op.f('fk_serving_segments_model_name_model_version_models')),
    sa.PrimaryKeyConstraint('model_name', 'model_version', name=op.f('pk_serving_segments')),
    sa.UniqueConstraint('segment_id', name=op.f('uq_serving_segments_segment_id'))
    )
    # Owned by its column: the writer role that owns the table owns the sequence (`predstore db grant`).
    op.execute("ALTER SEQUENCE serving_segment_ids OWNED BY serving_segments.segment_id")
    op.execute(f"CREATE VIEW served_runs AS {SERVED_RUNS}")
    # One segment per version that has runs or is current, filled from its set.
    versions = bind.execute(sa.text(
        """SELECT m.name, m.version, a.version IS NOT NULL AS current,
                  (SELECT max(published_at) FROM runs r WHERE r.model_name = m.name AND r.model_version = m.version
                   AND r.role = 'current' AND r.status IN ('published', 'superseded')) AS newest
           FROM models m LEFT JOIN model_aliases a ON a.model_name = m.name AND a.alias = 'current'
                AND a.version = m.version
           ORDER BY m.name, a.version IS NULL, newest DESC NULLS LAST, m.version DESC""")).fetchall()
    ranks: dict[str, int] = {}
    for name, version, current, newest in versions:
        runs = [r[0] for r in bind.execute(sa.text(SET_RUNS), {"model": name, "version": version})]
        if not runs and not current:
            continue
        rank = None
        if current or newest is not None:
            rank = ranks.get(name, 0)
            ranks[name] = rank + 1
        segment_id = bind.execute(sa.text("SELECT nextval('serving_segment_ids')")).scalar_one()
        table = f"predstore_serving.segment_{segment_id}"
        op.execute(f"CREATE TABLE {table} (LIKE served_predictions INCLUDING DEFAULTS)")
        if runs:
            op.execute(f"""
                INSERT INTO {table} (segment_id, entity_id, run_id, row_number, prediction, label, scores)
                SELECT DISTINCT ON (p.entity_id) {segment_id}, p.entity_id, p.run_id, p.row_number, p.prediction,
                       p.label, p.scores
                FROM predictions p JOIN runs r ON r.run_id = p.run_id
                WHERE p.run_id IN ({', '.join(map(str, runs))})
                ORDER BY p.entity_id, r.published_at DESC, p.run_id DESC""")
        op.execute(f"CREATE UNIQUE INDEX uq_segment_{segment_id} ON {table} (entity_id)")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT ck_segment_{segment_id} CHECK (segment_id = {segment_id})")
        op.execute(f"ALTER TABLE served_predictions ATTACH PARTITION {table} FOR VALUES IN ({segment_id})")
        bind.execute(sa.text(
            """INSERT INTO serving_segments (model_name, model_version, segment_id, rank, rows)
               SELECT :name, :version, :segment, :rank, count(*) FROM served_predictions WHERE segment_id = :segment"""),
            {"name": name, "version": version, "segment": segment_id, "rank": rank})
    op.execute(f"CREATE VIEW current_predictions WITH (security_barrier = true) AS {CURRENT_PREDICTIONS}")
    for role in readers:
        op.execute(f'GRANT SELECT ON served_predictions, serving_segments, served_runs, current_predictions TO "{role}"')


def downgrade() -> None:
    op.execute("DROP VIEW current_predictions")
    op.execute("DROP VIEW served_runs")
    op.drop_table('serving_segments')
    op.drop_table('served_predictions')  # and its segment tables, its partitions
    op.execute("DROP SEQUENCE IF EXISTS serving_segment_ids")  # owned by serving_segments: gone with it
    op.execute("DROP SCHEMA IF EXISTS predstore_serving CASCADE")
    op.create_table('served_predictions',
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('entity_id', sa.Text(collation='C'), nullable=False),
    sa.Column('row_number', sa.BigInteger(), nullable=False),
    sa.Column('prediction', sa.Float(precision=53), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('model_name', 'entity_id', 'role', name=op.f('pk_served_predictions')),
    postgresql_with={'fillfactor': 70}
    )
    op.execute(f"""
        INSERT INTO served_predictions ({OLD_COLUMNS})
        SELECT DISTINCT ON (model_name, entity_id, role) {OLD_COLUMNS.replace('scored_at', 'coalesce(scored_at, published_at)')}
        FROM published_predictions
        ORDER BY model_name, entity_id, role, published_at DESC, run_id DESC""")
    op.execute(f"CREATE VIEW current_predictions WITH (security_barrier = true) AS "
               f"SELECT {OLD_COLUMNS} FROM served_predictions WHERE role = 'current'")
    op.drop_column('runs', 'snapshot')
