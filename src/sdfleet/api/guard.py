"""Browser-borne attacks stopped before any route runs: DNS rebinding and cross-site requests.

* **Host check.** A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 reaches a loopback
  server with ``Host: evil.example``; so every request must name a host this server answers to
  (:meth:`Settings.host_names`: the loopback names on a loopback bind, ``public_url``'s host and
  ``allowed_hosts``). Anything else gets 400 ``invalid_host``. ``/health`` and ``/ready`` are exempt
  (orchestrators probe them by address).
* **Cross-site writes.** A state-changing request (POST, PUT, PATCH, DELETE) without an API key in a
  header — the kind a web page can make a browser send, with the browser's cached Basic credentials at
  most — must not come from another origin (``Origin`` other than this server's: 403
  ``cross_origin``) and must not carry a body a page can send without a CORS preflight: ``text/plain``,
  form or multipart bodies get 415 ``unsupported_media_type`` (JSON is what every endpoint takes; raw
  image bytes, as ``/v1/inputs`` takes them, need a preflight cross-site and pass). A body without any
  ``Content-Type`` passes only without an ``Origin`` (scripts, not browsers). Calls with a key
  (``Authorization: Bearer`` or ``X-API-Key``, which a cross-site page cannot set) and signed upload
  URLs (their signature is the credential) are not held to this.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sdfleet.api.errors import a1111_envelope, envelope, is_a1111_path
from sdfleet.config import Settings

log = logging.getLogger("sdfleet.api")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
"""Body types a cross-site page can send without a CORS preflight."""
HOST_EXEMPT = frozenset({"/health", "/ready"})
SIGNED_PREFIXES = ("/v1/worker/blobs/",)


def hostname_of(host: str) -> str:
    """The name in a Host header (or an Origin's netloc), without port or brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class RequestGuardMiddleware:
    """ASGI middleware: the Host check and the cross-site write rules (see the module)."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.exact, self.suffixes, self.any_host = settings.host_names()
        self.trusted_origins = {h for h in settings.allowed_hosts if h != "*"}
        if settings.public_url:
            parts = urlsplit(settings.public_url)
            self.public_origin = f"{parts.scheme}://{parts.netloc}".lower()
        else:
            self.public_origin = ""

    def host_allowed(self, name: str) -> bool:
        return self.any_host or name in self.exact or (bool(name) and name.endswith(self.suffixes))

    def origin_allowed(self, origin: str, host: str) -> bool:
        if origin == "null":
            return False
        parts = urlsplit(origin)
        netloc = parts.netloc.lower()
        if not parts.scheme or not netloc:
            return False
        if netloc == host.strip().lower() or origin.lower().rstrip("/") == self.public_origin:
            return True
        name = hostname_of(netloc)
        return any(name == t or (t.startswith("*.") and name.endswith(t[1:])) for t in self.trusted_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value)
        host = headers.get(b"host", b"").decode("latin-1")
        if path not in HOST_EXEMPT and not self.host_allowed(hostname_of(host)):
            log.info("guard.host_refused host=%r path=%s", host[:100], path)
            message = (
                f"this server does not answer to the host {host[:100]!r}: add it to allowed_hosts "
                "(SDFLEET_ALLOWED_HOSTS) or set public_url — Host names are checked against DNS rebinding"
            )
            await self._refuse(scope, receive, send, 400, "invalid_host", "InvalidHost", message, "host")
            return
        if scope["method"] in UNSAFE_METHODS and not _keyed(headers) and not path.startswith(SIGNED_PREFIXES):
            origin = headers.get(b"origin")
            if origin is not None and not self.origin_allowed(origin.decode("latin-1"), host):
                log.info("guard.cross_origin_refused origin=%r path=%s", origin[:100], path)
                message = (
                    f"a {scope['method']} from another origin ({origin.decode('latin-1')[:100]}) without an API key "
                    "is refused: send the key in an 'Authorization: Bearer' header"
                )
                await self._refuse(scope, receive, send, 403, "cross_origin", "Forbidden", message, "origin")
                return
            problem = _body_problem(headers, origin is not None)
            if problem:
                log.info("guard.simple_body_refused path=%s content_type=%r", path, problem)
                message = (
                    f"a {scope['method']} without an API key must send its body as 'Content-Type: "
                    f"application/json', not {problem} (any web page can send that cross-site)"
                )
                await self._refuse(
                    scope,
                    receive,
                    send,
                    415,
                    "unsupported_media_type",
                    "UnsupportedMediaType",
                    message,
                    "content-type",
                )
                return
        await self.app(scope, receive, send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        name: str,
        message: str,
        field: str,
    ) -> None:
        response: JSONResponse
        if is_a1111_path(scope["path"]):
            response = a1111_envelope(status, name, message)
        else:
            response = envelope(status, code, message, field)
        await response(scope, receive, send)


def _keyed(headers: dict[bytes, bytes]) -> bool:
    """A key in a header a cross-site page cannot set (a browser adds cached Basic credentials by itself)."""
    if headers.get(b"x-api-key"):
        return True
    scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and bool(value.strip())


def _body_problem(headers: dict[bytes, bytes], from_browser: bool) -> str | None:
    """Why this request's body may be a cross-site one (its content type, quoted), or None."""
    has_body = (
        headers.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in headers
    )
    content_type = headers.get(b"content-type")
    if content_type is None:
        return "a body without a Content-Type" if has_body and from_browser else None
    media = content_type.decode("latin-1").partition(";")[0].strip().lower()
    if media in SIMPLE_TYPES:
        return repr(media)
    return None
