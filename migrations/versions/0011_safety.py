"""safety: the views the lookup API's reader role reads are security barriers; the erasure list

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

A view's own conditions (published runs only, the current model version) are applied before any
condition a query adds, so a function in a reader's query cannot see the rows a view filters out.
Equality on text is leakproof, so lookups by entity id still use the index.

``erasures``: the keyed HMAC-SHA256 of each entity `predstore forget` erased (per model, or ''
for every model), which scoring rejects as 'erased'. ``erasure_key``: the HMAC key, 32 random
bytes generated here, in the database (no key passes through the migration's SQL). The audit
trail's erasure rows named the entity by an unsalted sha256, which a dictionary of ids reverses:
they keep the row and lose the digest.

``models.trusted_types``: the types of a skops version that skops does not trust by default,
reviewed and trusted when it was loaded at registration (NULL for joblib, and for versions
registered before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | Sequence[str] | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The views `predstore db grant` lets the reader role read.
READER_VIEWS = ("published_predictions", "current_predictions", "published_runs")


def _set(barrier: bool) -> None:
    for view in READER_VIEWS:
        op.execute(f"ALTER VIEW {view} SET (security_barrier = {str(barrier).lower()})")


def upgrade() -> None:
    _set(True)
    op.create_table('erasure_key',
    sa.Column('one', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('one', name=op.f('ck_erasure_key_one_row')),
    sa.PrimaryKeyConstraint('one', name=op.f('pk_erasure_key'))
    )
    # Two random UUIDs are 244 random bits; gen_random_uuid() is core PostgreSQL (13+).
    op.execute("INSERT INTO erasure_key (key) "
               "SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')")
    op.create_table('erasures',
    sa.Column('entity_hmac', sa.LargeBinary(), nullable=False),
    sa.Column('model_name', sa.Text(), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('entity_hmac', 'model_name', name=op.f('pk_erasures'))
    )
    op.add_column('models', sa.Column('trusted_types', postgresql.ARRAY(sa.Text()), nullable=True))
    op.execute("""UPDATE audit SET target = NULL,
                  details = coalesce(details, '{}') || '{"target": "unsalted digest removed"}'
                  WHERE action = 'entity.forget' AND target IS NOT NULL""")


def downgrade() -> None:
    op.drop_column('models', 'trusted_types')
    op.drop_table('erasures')
    op.drop_table('erasure_key')
    _set(False)
