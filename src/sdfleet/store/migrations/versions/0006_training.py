"""LoRA training jobs: the checkpoints a job keeps, and progress beyond step/total (loss, speed, ETA)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("checkpoints", sa.Text(), server_default="[]", nullable=False))
    op.add_column("jobs", sa.Column("progress_info", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress_info")
        batch.drop_column("checkpoints")
