"""live features: each live prediction keeps the row it was scored from, for the monitor

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

``live_predictions.features`` holds the features of the row, as validated (JSON; NULL for rows
recorded before). `predstore monitor` counts them into the version's baseline bins per day and
checks live traffic's drift apart from the batch runs'; labels are matched to live predictions
by entity and time (the new index).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0019'
down_revision: str | Sequence[str] | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('live_predictions', sa.Column('features', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index('ix_live_predictions_model_entity', 'live_predictions', ['model_name', 'entity_id', 'scored_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_live_predictions_model_entity', table_name='live_predictions')
    op.drop_column('live_predictions', 'features')
