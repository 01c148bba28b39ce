"""Guard for outbound requests to user-supplied URLs (webhooks, model sources): no private,
loopback, link-local or otherwise non-public addresses unless the operator allows them."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from sdfleet.errors import ValidationError


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


async def check_public_destination(
    url: str,
    *,
    allow_private: bool,
    field: str = "url",
    setting: str = "SDFLEET_ALLOW_PRIVATE_WEBHOOKS",
) -> None:
    """Resolve the URL's host and refuse it when any address is not public (``setting`` names the
    switch that allows them, for the message)."""
    check_url_syntax(url, field)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValidationError(f"cannot resolve {host!r}", field=field) from exc
    for info in infos:
        addr = str(info[4][0])
        if not _is_public(addr):
            raise ValidationError(
                f"{host!r} resolves to a non-public address ({addr}); private destinations are refused "
                f"unless the operator sets {setting}=true",
                field=field,
            )
