"""A1111-compatible API: per-tenant options and request task ids

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "a1111_options",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("options", sa.Text(), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_a1111_options")),
    )
    op.create_table(
        "a1111_tasks",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "task_id", name=op.f("pk_a1111_tasks")),
    )
    op.create_index("ix_a1111_tasks_job_id", "a1111_tasks", ["job_id"], unique=False)
    op.create_index("ix_a1111_tasks_tenant_created", "a1111_tasks", ["tenant", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_a1111_tasks_tenant_created", table_name="a1111_tasks")
    op.drop_index("ix_a1111_tasks_job_id", table_name="a1111_tasks")
    op.drop_table("a1111_tasks")
    op.drop_table("a1111_options")
