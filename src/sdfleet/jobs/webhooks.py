"""Webhook delivery from the durable outbox: signed in the Standard Webhooks style, retried with
exponential backoff, at least once.

Headers: ``webhook-id`` (the message id, stable across retries: receivers de-duplicate on it),
``webhook-timestamp`` (integer seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``"{id}.{timestamp}.{body}"`` keyed with the tenant's secret (``whsec_`` + base64 bytes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

import httpx

from sdfleet.config import Settings
from sdfleet.errors import SdfleetError
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.netguard import check_public_destination
from sdfleet.jobs.notify import Notifier
from sdfleet.store import JobStore, OutboxMessage, SqlTx

log = logging.getLogger("sdfleet.webhooks")


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: str, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """Check a delivery's signature and freshness (what a receiver does)."""
    msg_id = headers.get("webhook-id", "")
    ts = int(headers.get("webhook-timestamp", "0"))
    if abs((now or time.time()) - ts) > tolerance:
        return False
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(expected, s.split(",", 1)[1])
        for s in headers.get("webhook-signature", "").split()
        if "," in s
    )


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): base, 2·base, 4·base, … up to cap."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class WebhookDispatcher:
    """Delivers due outbox messages. Run :meth:`run` as a background task on every replica;
    rows are locked while in flight so replicas do not send the same attempt twice."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        metrics: Metrics,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
    ):
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._client = client or httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False)
        self.notifier = notifier

    async def deliver_due(self, limit: int = 50) -> int:
        """Send every message that is due now; return how many were attempted."""
        now = self.clock()
        lock_until = now + self.settings.webhook_timeout * 2 + 5

        def lock(tx: SqlTx) -> tuple[list[OutboxMessage], dict[str, str]]:
            due = tx.lock_due_webhooks(now, lock_until, limit)
            secrets_by_tenant: dict[str, str] = {}
            for m in due:
                if m.tenant not in secrets_by_tenant:
                    tenant = tx.get_tenant(m.tenant)
                    secrets_by_tenant[m.tenant] = tenant.webhook_secret if tenant else ""
            return due, secrets_by_tenant

        due, secrets_by_tenant = await self.store.write(lock)
        if due:
            await asyncio.gather(*(self._deliver(m, secrets_by_tenant[m.tenant]) for m in due))
        return len(due)

    async def _deliver(self, message: OutboxMessage, secret: str) -> None:
        ts = int(self.clock())
        error: str | None = None
        try:
            await check_public_destination(
                message.url, allow_private=self.settings.allow_private_webhooks, field="webhook_url"
            )
            resp = await self._client.post(
                message.url,
                content=message.payload.encode(),
                headers={
                    "content-type": "application/json",
                    "user-agent": "sdfleet-webhooks/1",
                    "webhook-id": message.message_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": sign(secret, message.message_id, ts, message.payload),
                },
            )
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
        except (httpx.HTTPError, SdfleetError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempts = message.attempts + 1
        now = self.clock()
        if error is None:
            values: dict[str, object] = {"state": "delivered", "delivered_at": now, "last_error": None}
        elif attempts >= self.settings.webhook_max_attempts:
            values = {"state": "dead", "last_error": error}
        else:
            delay = backoff_delay(
                attempts, self.settings.webhook_backoff_base, self.settings.webhook_backoff_max
            )
            values = {"last_error": error, "next_attempt_at": now + delay}
        await self.store.write(
            lambda tx: tx.update_webhook(message.message_id, attempts=attempts, locked_until=None, **values)
        )
        outcome = "delivered" if error is None else "failed"
        self.metrics.webhooks.labels(outcome).inc()
        log.info(
            "webhook.%s message_id=%s job_id=%s attempt=%d%s",
            outcome,
            message.message_id,
            message.job_id,
            attempts,
            f" error={error}" if error else "",
        )

    async def run(self, poll_interval: float = 1.0) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except SdfleetError as exc:
                log.warning("webhook.dispatch_error error=%s", exc)
                sent = 0
            if not sent:
                await self.notifier.wait_for_webhooks(poll_interval)

    async def close(self) -> None:
        await self._client.aclose()
