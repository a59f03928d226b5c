"""live scoring: key scopes, a model's answer to a miss, and the live predictions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

``api_keys.scopes`` lists what a key may do beyond lookups (``score``: live scoring); NULL for
lookups only, which every key made before keeps. ``model_policies.on_miss`` is what a batch lookup
with rows does for the entities the store has no prediction of (``404``, the default, or
``score``). ``live_predictions`` holds every prediction the lookup API scored live. The lookup
API's roles may read the policies and the erasure list (live scoring rejects erased entities as a
batch run does) and add live predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0017'
down_revision: str | Sequence[str] | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column('api_keys', sa.Column('scopes', postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column('model_policies', sa.Column('on_miss', sa.Text(), nullable=True))
    op.create_check_constraint(op.f('ck_model_policies_on_miss'), 'model_policies', "on_miss IN ('404', 'score')")
    op.create_table('live_predictions',
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.Text(collation='C'), nullable=False),
    sa.Column('prediction', sa.Float(precision=53), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('scores', postgresql.ARRAY(sa.Float(precision=53)), nullable=True)
    )
    op.create_index('ix_live_predictions_model_scored_at', 'live_predictions', ['model_name', 'scored_at'],
                    unique=False)
    readers = [r[0] for r in bind.execute(sa.text(
        """SELECT DISTINCT grantee FROM information_schema.role_table_grants
           WHERE table_schema = 'public' AND table_name = 'served_predictions' AND privilege_type = 'SELECT'
             AND grantee <> current_user
             AND grantee IN (SELECT grantee FROM information_schema.role_table_grants
                             WHERE table_name = 'lookup_counts' AND privilege_type = 'INSERT')"""))]
    for role in readers:
        op.execute(f'GRANT SELECT ON model_policies, erasures, erasure_key TO "{role}"')
        op.execute(f'GRANT INSERT ON live_predictions TO "{role}"')


def downgrade() -> None:
    op.drop_index('ix_live_predictions_model_scored_at', table_name='live_predictions')
    op.drop_table('live_predictions')
    op.drop_constraint(op.f('ck_model_policies_on_miss'), 'model_policies', type_='check')
    op.drop_column('model_policies', 'on_miss')
    op.drop_column('api_keys', 'scopes')
