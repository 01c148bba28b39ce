"""The SQL schema (SQLAlchemy Core). Alembic migrations under ``migrations/`` must match it;
``tests/integration/store/test_migrations.py`` checks that they do.

Timestamps are float seconds since the epoch (the injected clock's unit), JSON columns are text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("webhook_url", Text, nullable=True),
    Column("webhook_secret", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # quotas and fair share (issue 14): limits an admin set for this tenant (JSON; absent: the
    # settings' default, null: unlimited), the fair-share weight, the two token buckets (tokens NULL:
    # full), when a claim last handed this tenant jobs and how many it was handed lately
    Column("limits", Text, nullable=False, server_default="{}"),
    Column("weight", Float, nullable=True),
    Column("rate_tokens", Float, nullable=True),
    Column("rate_ts", Float, nullable=True),
    Column("gpu_tokens", Float, nullable=True),
    Column("gpu_ts", Float, nullable=True),
    Column("served_at", Float, nullable=True),
    Column("share_used", Float, nullable=True),  # jobs handed out lately (decaying, see claim.py)
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("scopes", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("spec", Text, nullable=False),
    Column("req_arch", String(16), nullable=True),
    Column("req_pixels", BigInteger, nullable=False),
    Column("req_features", Integer, nullable=False, server_default=text("0")),
    Column("req_model", String(200), nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("webhook_url", Text, nullable=True),
    Column("labels", Text, nullable=False, server_default="{}"),
    Column("lease_epoch", Integer, nullable=False, server_default=text("0")),
    Column("lease_worker", String(40), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("interruptions", Integer, nullable=False, server_default=text("0")),
    Column("stalled", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("progress_step", Integer, nullable=False, server_default=text("0")),
    Column("progress_total", Integer, nullable=False, server_default=text("0")),
    Column("wait_reason", Text, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("engine_seconds", Float, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),
    Column("result", Text, nullable=False, server_default="{}"),
    Column("checkpoints", Text, nullable=False, server_default="[]"),
    Column("progress_info", Text, nullable=False, server_default="{}"),
    # the job was put at the head of the queue once (stalled): it never is again
    Column("jumped", Boolean, nullable=False, server_default=text("false")),
    # fan-out: a child job's parent; a parent's stage (the round of children it waits for)
    Column("parent_id", String(40), nullable=True),
    Column("stage", Integer, nullable=False, server_default=text("0")),
    # what the submit took from the tenant's daily GPU budget (estimated seconds): refunded on a cancel
    # before any worker ran the job
    Column("gpu_charge", Float, nullable=False, server_default=text("0")),
    UniqueConstraint("tenant", "idempotency_key"),
    Index("ix_jobs_claim", "state", text("stalled DESC"), text("priority DESC"), "id"),
    # fair-share claims read each tenant's queue in claim order; quotas count its live jobs
    Index("ix_jobs_tenant_claim", "tenant", "state", text("stalled DESC"), text("priority DESC"), "id"),
    Index("ix_jobs_lease", "state", "lease_expires_at"),
    Index("ix_jobs_tenant_id", "tenant", "id"),
    Index("ix_jobs_parent", "parent_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("worker_id", String(40), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_heartbeat_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("engine_seconds", Float, nullable=False, server_default=text("0")),
    Column("price_per_hour", Float, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),
    Column("refunded", Boolean, nullable=False, server_default=text("false")),
    Column("timings", Text, nullable=False, server_default="{}"),
    UniqueConstraint("job_id", "epoch"),
    Index("ix_attempts_job_worker", "job_id", "worker_id"),
    Index("ix_attempts_worker_outcome", "worker_id", "outcome", "ended_at"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("kinds", String(200), nullable=False),
    Column("archs", String(200), nullable=False),
    Column("max_pixels", BigInteger, nullable=False),
    Column("features", Integer, nullable=False, server_default=text("0")),
    Column("gpu_name", String(200), nullable=False, server_default=""),
    Column("gpu_memory_mb", Integer, nullable=False, server_default=text("0")),
    Column("price_per_hour", Float, nullable=False, server_default=text("0")),
    Column("engine", String(64), nullable=False, server_default=""),
    Column("version", String(64), nullable=False, server_default=""),
    Column("registered_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("quarantined_until", Float, nullable=True),
    Column("quarantine_reason", Text, nullable=True),
    Column("jobs_done", Integer, nullable=False, server_default=text("0")),
    Column("jobs_failed", Integer, nullable=False, server_default=text("0")),
    Column("engine_seconds", Float, nullable=False, server_default=text("0")),
    Column("current_jobs", Text, nullable=False, server_default="[]"),
    Column("loaded_models", Text, nullable=False, server_default="[]"),
    Column("info", Text, nullable=False, server_default="{}"),
    Column("cached_models", Text, nullable=False, server_default="[]"),  # on the worker's disk
    Index("ix_workers_state_seen", "state", "last_seen_at"),
)

outputs = Table(
    "outputs",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("blob_key", Text, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("seed", BigInteger, nullable=True),
    Column("infotext", Text, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("job_id", "idx"),
    Index("ix_outputs_tenant_created", "tenant", "created_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_events_job_id", "job_id", "id"),
)

# The registry names a job uses besides its checkpoint (which is ``jobs.req_model``): LoRAs, VAE,
# refiner. Claims score them against the claiming worker's warm set; ``/v1/fleet/models`` counts them.
job_models = Table(
    "job_models",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    PrimaryKeyConstraint("job_id", "name"),
)

webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(40), nullable=False, unique=True),
    Column("job_id", String(40), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Float, nullable=False),
    Column("locked_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    Index("ix_webhook_outbox_due", "state", "next_attempt_at"),
)

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("arch", String(16), nullable=True),
    Column("source", Text, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("trigger_words", Text, nullable=False, server_default="[]"),
    Column("default_weight", Float, nullable=False, server_default=text("1")),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("resolution", Integer, nullable=True),
    Column("scale", Integer, nullable=True),
    Index("ix_models_kind_name", "kind", "name"),
)

# ===================================================================== the A1111-compatible API (issue 4)
# Per-tenant A1111 settings (``/sdapi/v1/options``) and the task ids of A1111 requests (``force_task_id``,
# ``/internal/progress``, "the caller's current request" for ``/progress``, ``/interrupt``, ``/skip``).

a1111_options = Table(
    "a1111_options",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("options", Text, nullable=False, server_default="{}"),
    Column("updated_at", Float, nullable=False),
)

a1111_tasks = Table(
    "a1111_tasks",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("done", Boolean, nullable=False, server_default=text("false")),  # the call has answered
    PrimaryKeyConstraint("tenant", "task_id"),
    Index("ix_a1111_tasks_job_id", "job_id"),
    Index("ix_a1111_tasks_tenant_created", "tenant", "created_at"),
    Index("ix_a1111_tasks_tenant_done", "tenant", "done"),
)
