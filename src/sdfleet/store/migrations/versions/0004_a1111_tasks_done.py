"""A1111-compatible API: mark answered requests, so "the caller's current request" reads only those in flight

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "a1111_tasks", sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.create_index("ix_a1111_tasks_tenant_done", "a1111_tasks", ["tenant", "done"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_a1111_tasks_tenant_done", table_name="a1111_tasks")
    with op.batch_alter_table("a1111_tasks") as batch:
        batch.drop_column("done")
