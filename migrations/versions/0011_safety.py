"""safety: the views the lookup API's reader role reads are security barriers

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

A view's own conditions (published runs only, the current model version) are applied before any
condition a query adds, so a function in a reader's query cannot see the rows a view filters out.
Equality on text is leakproof, so lookups by entity id still use the index.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

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


def downgrade() -> None:
    _set(False)
