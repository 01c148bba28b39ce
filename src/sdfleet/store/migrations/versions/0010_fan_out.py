"""Jobs that fan out: a child job's parent, and a parent's stage (the round of child jobs it waits for)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("parent_id", sa.String(40), nullable=True))
    op.add_column("jobs", sa.Column("stage", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_parent", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stage")
        batch.drop_column("parent_id")
