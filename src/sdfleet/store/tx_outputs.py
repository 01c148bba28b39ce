"""Transaction statements on what jobs produce: outputs, progress events and the webhook outbox
(a mixin of :class:`sdfleet.store.tx.SqlTx`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from sdfleet.domain import Event, EventType, Output
from sdfleet.store.dialect import Dialect
from sdfleet.store.records import OutboxMessage
from sdfleet.store.rows import dumps, event_from_row, outbox_from_row, output_from_row
from sdfleet.store.schema import events, outputs, webhook_outbox


class OutputStatements:
    """Outputs, events and webhook messages. Runs on the transaction's connection."""

    conn: Connection
    dialect: Dialect

    # ---------------------------------------------------------------- outputs
    def insert_outputs_of(self, rows: Sequence[tuple[Output, str]]) -> None:
        """Insert outputs of several jobs: (output, tenant) pairs."""
        if rows:
            self.conn.execute(
                insert(outputs),
                [
                    {
                        "job_id": o.job_id,
                        "idx": o.index,
                        "tenant": t,
                        "blob_key": o.blob_key,
                        "content_type": o.content_type,
                        "size": o.size,
                        "seed": o.seed,
                        "infotext": o.infotext,
                        "sha256": o.sha256,
                        "created_at": o.created_at,
                    }
                    for o, t in rows
                ],
            )

    def list_outputs(self, job_id: str) -> list[Output]:
        rows = self.conn.execute(select(outputs).where(outputs.c.job_id == job_id).order_by(outputs.c.idx))
        return [output_from_row(r) for r in rows]

    def outputs_for_jobs(self, job_ids: Sequence[str]) -> dict[str, list[Output]]:
        result: dict[str, list[Output]] = {j: [] for j in job_ids}
        if job_ids:
            rows = self.conn.execute(
                select(outputs)
                .where(outputs.c.job_id.in_(list(job_ids)))
                .order_by(outputs.c.job_id, outputs.c.idx)
            )
            for r in rows:
                result[r._mapping["job_id"]].append(output_from_row(r))
        return result

    def list_tenant_outputs(
        self, tenant: str | None, *, before: tuple[float, str, int] | None, limit: int
    ) -> list[tuple[Output, str]]:
        q = (
            select(outputs)
            .order_by(outputs.c.created_at.desc(), outputs.c.job_id.desc(), outputs.c.idx.desc())
            .limit(limit)
        )
        if tenant is not None:
            q = q.where(outputs.c.tenant == tenant)
        if before is not None:
            t, job_id, idx = before
            q = q.where(
                or_(
                    outputs.c.created_at < t,
                    and_(outputs.c.created_at == t, outputs.c.job_id < job_id),
                    and_(outputs.c.created_at == t, outputs.c.job_id == job_id, outputs.c.idx < idx),
                )
            )
        return [(output_from_row(r), r._mapping["tenant"]) for r in self.conn.execute(q)]

    def delete_outputs(self, job_id: str) -> None:
        self.conn.execute(delete(outputs).where(outputs.c.job_id == job_id))

    # ---------------------------------------------------------------- events
    def insert_events(self, rows: Sequence[tuple[str, str, EventType, dict[str, Any], float]]) -> None:
        """Append events: (job_id, tenant, type, data, created_at)."""
        if rows:
            self.conn.execute(
                insert(events),
                [
                    {"job_id": j, "tenant": t, "type": ty.value, "data": dumps(d), "created_at": c}
                    for j, t, ty, d, c in rows
                ],
            )

    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[Event]:
        rows = self.conn.execute(
            select(events)
            .where(events.c.job_id == job_id, events.c.id > after_id)
            .order_by(events.c.id)
            .limit(limit)
        )
        return [event_from_row(r) for r in rows]

    def prune_events(self, older_than: float) -> int:
        res = self.conn.execute(delete(events).where(events.c.created_at < older_than))
        return int(res.rowcount or 0)

    # ---------------------------------------------------------------- webhook outbox
    def insert_outbox(self, rows: Sequence[OutboxMessage]) -> None:
        if rows:
            self.conn.execute(
                insert(webhook_outbox),
                [
                    {
                        "message_id": m.message_id,
                        "job_id": m.job_id,
                        "tenant": m.tenant,
                        "url": m.url,
                        "event_type": m.event_type,
                        "payload": m.payload,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": m.next_attempt_at,
                        "created_at": m.created_at,
                    }
                    for m in rows
                ],
            )

    def lock_due_webhooks(self, now: float, lock_until: float, limit: int) -> list[OutboxMessage]:
        due = (
            select(webhook_outbox.c.id)
            .where(
                webhook_outbox.c.state == "pending",
                webhook_outbox.c.next_attempt_at <= now,
                or_(webhook_outbox.c.locked_until.is_(None), webhook_outbox.c.locked_until < now),
            )
            .order_by(webhook_outbox.c.next_attempt_at)
            .limit(limit)
        )
        due = self.dialect.lock_for_claim(due)
        rows = self.conn.execute(
            update(webhook_outbox)
            .where(webhook_outbox.c.id.in_(due.scalar_subquery()))
            .values(locked_until=lock_until)
            .returning(*webhook_outbox.c)
        )
        return [outbox_from_row(r) for r in rows]

    def update_webhook(self, message_id: str, **values: Any) -> None:
        self.conn.execute(
            update(webhook_outbox).where(webhook_outbox.c.message_id == message_id).values(**values)
        )

    def list_webhooks(self, job_id: str) -> list[OutboxMessage]:
        rows = self.conn.execute(
            select(webhook_outbox).where(webhook_outbox.c.job_id == job_id).order_by(webhook_outbox.c.id)
        )
        return [outbox_from_row(r) for r in rows]
