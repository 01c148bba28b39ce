"""Guard for outbound requests to user-supplied URLs (webhooks, model sources): no private,
loopback, link-local or otherwise non-public addresses unless the operator allows them.

Shared by the orchestrator (webhooks) and the worker (model downloads), so it imports nothing of
``jobs/`` or ``worker/``.

The check and the connection use the same addresses: :func:`guarded_transport` gives an httpx
transport whose network backend resolves the host once, refuses it when any address is not
public, and then connects to one of exactly those addresses. There is no second lookup between
check and connect, so a name that answers a public address to the check and a private one to the
connect (DNS rebinding) cannot reach the private one. The request keeps the host name for the
``Host`` header, for TLS SNI and for certificate verification; only the TCP connect uses the IP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from sdfleet.errors import ValidationError

log = logging.getLogger("sdfleet.netguard")

Resolver = Callable[[str, int], Awaitable[list[str]]]


def check_url_syntax(url: str, field: str) -> str:
    """Accept only absolute http(s) URLs with a host and no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an absolute http:// or https:// URL", field=field)
    if parts.username or parts.password:
        raise ValidationError("must not carry credentials", field=field)
    return url


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver), in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


def _refuse_private(host: str, addrs: Iterable[str], field: str, setting: str) -> None:
    for addr in addrs:
        if not _is_public(addr):
            raise ValidationError(
                f"{host!r} resolves to a non-public address ({addr}); private destinations are refused "
                f"unless the operator sets {setting}=true",
                field=field,
            )


async def resolve_checked(
    host: str,
    port: int,
    *,
    allow_private: bool,
    field: str = "url",
    setting: str = "SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
    resolver: Resolver = system_resolve,
) -> list[str]:
    """Resolve ``host`` once and return its addresses, refusing (``ValidationError`` naming
    ``field``) when any is not public and private destinations are not allowed."""
    try:
        addrs = await resolver(host, port)
    except OSError as exc:
        raise ValidationError(f"cannot resolve {host!r}", field=field) from exc
    if not addrs:
        raise ValidationError(f"cannot resolve {host!r}", field=field)
    if not allow_private:
        _refuse_private(host, addrs, field, setting)
    return addrs


async def check_public_destination(
    url: str,
    *,
    allow_private: bool,
    field: str = "url",
    setting: str = "SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
) -> None:
    """Resolve the URL's host and refuse it when any address is not public (``setting`` names the
    switch that allows them, for the message). A check only: to connect, use
    :func:`guarded_transport`, which checks the addresses it connects to."""
    check_url_syntax(url, field)
    if allow_private:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await resolve_checked(parts.hostname or "", port, allow_private=False, field=field, setting=setting)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host once, checks every address, and
    connects only to those checked addresses (the first that accepts)."""

    def __init__(
        self,
        *,
        allow_private: bool,
        field: str,
        setting: str,
        resolver: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.field = field
        self.setting = setting
        self.resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addrs = await resolve_checked(
            host,
            port,
            allow_private=self.allow_private,
            field=self.field,
            setting=self.setting,
            resolver=self.resolver,
        )
        last: Exception | None = None
        for addr in addrs:
            try:
                return await self._inner.connect_tcp(
                    addr, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                log.debug("netguard.connect_failed host=%s addr=%s error=%s", host, addr, exc)
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ValidationError("unix sockets are not a destination", field=self.field)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, with its connection pool built on :class:`GuardedBackend` and no proxy
    (a proxy would resolve the name itself). Connections are pooled per host name, so a
    connection verified for one name is never reused for another."""

    def __init__(
        self,
        *,
        allow_private: bool,
        field: str = "url",
        setting: str = "SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
        resolver: Resolver = system_resolve,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        self.backend = GuardedBackend(
            allow_private=allow_private, field=field, setting=setting, resolver=resolver
        )
        # certificates are verified against the URL's host name (httpcore passes it as SNI and
        # server_hostname), never against the IP the connection went to
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )


def guarded_transport(
    *,
    allow_private: bool,
    field: str = "url",
    setting: str = "SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
    resolver: Resolver = system_resolve,
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedTransport:
    """An httpx transport for user-supplied URLs; use it with ``trust_env=False`` on the client
    (so no environment proxy bypasses it). Refusals raise :class:`ValidationError` naming ``field``
    from the request."""
    return GuardedTransport(
        allow_private=allow_private, field=field, setting=setting, resolver=resolver, ssl_context=ssl_context
    )
