"""Webhook delivery from the durable outbox: signed in the Standard Webhooks style, retried with
exponential backoff, at least once.

Headers: ``webhook-id`` (the message id, stable across retries: receivers de-duplicate on it),
``webhook-timestamp`` (integer seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``"{id}.{timestamp}.{body}"`` keyed with the tenant's secret (``whsec_`` + base64 bytes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from sdfleet.config import Settings
from sdfleet.errors import SdfleetError
from sdfleet.jobs.metrics import Metrics
from sdfleet.jobs.notify import Notifier
from sdfleet.netguard import check_url_syntax, guarded_transport
from sdfleet.store import JobStore, OutboxMessage, SqlTx

log = logging.getLogger("sdfleet.webhooks")

QUEUE_FACTOR = 3  # messages queued per destination, per allowed in-flight delivery
MIN_DEFER = 0.05  # seconds: the shortest put-back of a message for a busy destination


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
    rows are locked while in flight so replicas do not send the same attempt twice.

    Deliveries run concurrently, each bounded by ``webhook_timeout`` end to end, and never wait
    for one another: at most ``webhook_concurrency`` messages are held by this dispatcher at once,
    and at most ``webhook_per_destination`` are in flight to one destination (scheme, host, port)
    with a few more queued behind them. Messages beyond that for a busy destination are put back
    (not an attempt) for about the time the destination needs to drain its queue, so a slow
    receiver delays only its own deliveries."""

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
        self.concurrency = max(1, settings.webhook_concurrency)
        self.per_destination = max(1, settings.webhook_per_destination)
        self.queue_per_destination = self.per_destination * QUEUE_FACTOR
        self._client = client or httpx.AsyncClient(
            transport=guarded_transport(
                allow_private=settings.allow_private_webhooks,
                field="webhook_url",
                setting="SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
            ),
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            trust_env=False,
        )
        self.notifier = notifier
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: Counter[str] = Counter()
        self._queued: dict[str, deque[tuple[OutboxMessage, str]]] = {}
        self._latency: dict[str, float] = {}  # per destination: smoothed seconds per delivery
        self._held = 0  # messages locked by this dispatcher and not yet recorded
        self._freed = asyncio.Event()

    @property
    def held(self) -> int:
        """Messages this dispatcher holds (in flight or queued behind their destination)."""
        return self._held

    async def dispatch_due(self) -> int:
        """Lock due messages up to the free capacity and start (or queue) their deliveries without
        waiting for them; return how many were locked."""
        capacity = self.concurrency - self._held
        if capacity <= 0:
            return 0
        now = self.clock()
        # a queued message may wait for its destination's in-flight ones before its own attempt
        lock_until = now + self.settings.webhook_timeout * (2 + QUEUE_FACTOR) + 5

        def lock(tx: SqlTx) -> tuple[list[OutboxMessage], dict[str, str]]:
            due = tx.lock_due_webhooks(now, lock_until, capacity)
            secrets_by_tenant: dict[str, str] = {}
            for m in due:
                if m.tenant not in secrets_by_tenant:
                    tenant = tx.get_tenant(m.tenant)
                    secrets_by_tenant[m.tenant] = tenant.webhook_secret if tenant else ""
            return due, secrets_by_tenant

        due, secrets_by_tenant = await self.store.write(lock)
        deferred: list[tuple[OutboxMessage, float]] = []
        for m in due:
            dest = destination_of(m.url)
            if self._in_flight[dest] < self.per_destination:
                self._held += 1
                self._start(dest, m, secrets_by_tenant[m.tenant])
            elif len(queue := self._queued.setdefault(dest, deque())) < self.queue_per_destination:
                self._held += 1
                queue.append((m, secrets_by_tenant[m.tenant]))
            else:
                deferred.append((m, now + self._drain_estimate(dest)))
        if deferred:

            def put_back(tx: SqlTx) -> None:
                for m, at in deferred:
                    tx.update_webhook(m.message_id, locked_until=None, next_attempt_at=at)

            await self.store.write(put_back)
            log.info("webhook.deferred count=%d reason=destination_busy", len(deferred))
        return len(due)

    def _drain_estimate(self, dest: str) -> float:
        """Seconds until ``dest`` has likely worked through what this dispatcher holds for it."""
        per_delivery = self._latency.get(dest, 1.0)
        backlog = self._in_flight[dest] + len(self._queued.get(dest, ()))
        estimate = per_delivery * backlog / self.per_destination
        return float(min(max(estimate, MIN_DEFER), self.settings.webhook_timeout))

    def _start(self, dest: str, message: OutboxMessage, secret: str) -> None:
        self._in_flight[dest] += 1
        task = asyncio.create_task(self._run_one(dest, message, secret))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, dest: str, message: OutboxMessage, secret: str) -> None:
        started = time.monotonic()
        try:
            await self._deliver(message, secret)
        except SdfleetError as exc:  # recording the outcome failed: the lock expires, it is retried
            log.warning("webhook.record_error message_id=%s error=%s", message.message_id, exc)
        finally:
            took = time.monotonic() - started
            previous = self._latency.get(dest)
            self._latency[dest] = took if previous is None else 0.7 * previous + 0.3 * took
            self._in_flight[dest] -= 1
            self._held -= 1
            queue = self._queued.get(dest)
            if queue:
                self._start(dest, *queue.popleft())
            if not queue:
                self._queued.pop(dest, None)
            if not self._in_flight[dest]:
                del self._in_flight[dest]
            self._freed.set()

    async def _deliver(self, message: OutboxMessage, secret: str) -> None:
        ts = int(self.clock())
        error: str | None = None
        try:
            check_url_syntax(message.url, "webhook_url")
            resp = await asyncio.wait_for(
                self._client.post(
                    message.url,
                    content=message.payload.encode(),
                    headers={
                        "content-type": "application/json",
                        "user-agent": "sdfleet-webhooks/1",
                        "webhook-id": message.message_id,
                        "webhook-timestamp": str(ts),
                        "webhook-signature": sign(secret, message.message_id, ts, message.payload),
                    },
                ),
                self.settings.webhook_timeout,
            )
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
        except TimeoutError:
            error = f"timed out after {self.settings.webhook_timeout:g} s"
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
        """Dispatch forever: start what is due, then wait for a free slot (when full), a new
        message, or ``poll_interval``."""
        while True:
            try:
                taken = await self.dispatch_due()
            except SdfleetError as exc:
                log.warning("webhook.dispatch_error error=%s", exc)
                taken = 0
            if self._held >= self.concurrency:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), poll_interval)
            elif not taken:
                await self.notifier.wait_for_webhooks(poll_interval)

    async def wait_idle(self) -> None:
        """Wait until every started delivery (and those queued behind them) is recorded."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._client.aclose()


def destination_of(url: str) -> str:
    """The key deliveries are bounded by: scheme, host and port of the URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port or default}"
