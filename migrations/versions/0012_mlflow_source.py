"""mlflow source: where a version registered from MLflow came from

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

``models.mlflow_uri``: the MLflow URI a version was fetched from, fixed to what it resolved to
(``models:/churn/3`` for ``models:/churn@champion``, since an alias moves; ``runs:/<id>/model``
as given). ``models.mlflow_version``: the MLflow registry's version number, when it came from the
registry. Both NULL for a version registered from a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | Sequence[str] | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('models', sa.Column('mlflow_uri', sa.Text(), nullable=True))
    op.add_column('models', sa.Column('mlflow_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('models', 'mlflow_version')
    op.drop_column('models', 'mlflow_uri')
