"""A loose per-address limit in front of the app, against floods of unauthenticated requests.

Requests that carry no credentials (no ``Authorization``, no ``X-API-Key``) are counted per client
address in a token bucket held in this process (each replica counts on its own); over the limit they
get a 429 with ``Retry-After`` before any route runs. Loopback addresses are exempt by default
(``sdfleet up``'s own workers and tools), and so is anything that is not an IP address. Callers with a key are held to their tenant's
quotas instead (:mod:`sdfleet.jobs.quotas`), which every replica shares through the job store.
Tuned or switched off with ``SDFLEET_IP_LIMIT__RATE``, ``__BURST``, ``__ENABLED``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from sdfleet.api.errors import a1111_envelope, envelope, is_a1111_path
from sdfleet.config import IpLimit
from sdfleet.jobs.quotas import rate_limit_headers, refilled, seconds_until

log = logging.getLogger("sdfleet.api")
_CREDENTIALS = (b"authorization", b"x-api-key")


class AddressBuckets:
    """Token buckets per address, the least recently seen dropped past ``max_addresses``."""

    def __init__(self, limit: IpLimit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """Take one token for ``address``: 0.0 when it could, else the seconds until it can."""
        now = self.clock()
        tokens, ts = self._buckets.pop(address, (self.limit.burst, now))
        have = refilled(tokens, ts, self.limit.rate, self.limit.burst, now)
        wait = 0.0
        if have >= 1.0:
            have -= 1.0
        else:
            wait = seconds_until(have, 1.0, self.limit.rate)
        self._buckets[address] = (have, now)
        while len(self._buckets) > self.limit.max_addresses:
            self._buckets.popitem(last=False)
        return wait


def _exempt(address: str, loopback: bool) -> bool:
    """Addresses never limited: loopback ones when ``loopback``, and whatever is not an IP address
    (a Unix socket, an in-process test client)."""
    try:
        return loopback and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True


class AddressRateLimitMiddleware:
    """ASGI middleware: the per-address limit on requests without credentials (see the module)."""

    def __init__(self, app: ASGIApp, limit: IpLimit, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.limit = limit
        self.buckets = AddressBuckets(limit, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit.enabled:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else ""
        anonymous = not any(name in _CREDENTIALS for name, _ in scope.get("headers", ()))
        if not anonymous or _exempt(address, self.limit.exempt_loopback):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(address)
        if not wait:
            await self.app(scope, receive, send)
            return
        log.info("ratelimit.address_refused address=%s path=%s wait=%.2f", address, scope["path"], wait)
        message = f"too many requests without an API key from {address}: retry in {wait:.1f} s"
        headers = rate_limit_headers(
            self.limit.burst, 0, seconds_until(0, self.limit.burst, self.limit.rate), wait
        )
        if is_a1111_path(scope["path"]):
            response = a1111_envelope(429, "RateLimited", message, headers=headers)
        else:
            response = envelope(429, "rate_limited", message, None, None, headers)
        await response(scope, receive, send)
