"""quotas, rate limits and fair share (issue 14): per-tenant limits, weight and token buckets; the
per-tenant claim index; a job is put at the head of the queue (stalled) at most once

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TENANT_COLUMNS = (
    "limits",
    "weight",
    "rate_tokens",
    "rate_ts",
    "gpu_tokens",
    "gpu_ts",
    "served_at",
    "share_used",
)


def upgrade() -> None:
    op.add_column("tenants", sa.Column("limits", sa.Text(), server_default="{}", nullable=False))
    for name in _TENANT_COLUMNS[1:]:
        op.add_column("tenants", sa.Column(name, sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("jumped", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_index(
        "ix_jobs_tenant_claim",
        "jobs",
        ["tenant", "state", sa.text("stalled DESC"), sa.text("priority DESC"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_claim", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("jumped")
    with op.batch_alter_table("tenants") as batch:
        for name in reversed(_TENANT_COLUMNS):
            batch.drop_column(name)
