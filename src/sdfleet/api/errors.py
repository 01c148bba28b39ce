"""One error envelope for every failure: ``{"error": {"code", "message", "field"}}``.

Bad input is a 4xx naming the field; a body over the limit is a 413 before it is read whole.

The AUTOMATIC1111-compatible routes (``/sdapi/…``, ``/internal/…``) answer the same errors in A1111's
envelope instead, ``{"error": <class name>, "detail", "body", "errors"}`` with the same status, and request
validation errors in FastAPI's standard 422 ``{"detail": [...]}`` — what A1111 clients expect.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdfleet.errors import AuthError, PayloadTooLarge, RateLimited, SdfleetError

log = logging.getLogger("sdfleet.api")

A1111_PATHS = ("/sdapi/", "/internal/")
"""Paths whose errors use A1111's envelope."""


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with what JSON cannot carry made printable: NaN/Infinity become their names, text with
    unpaired surrogates is escaped, nesting is cut — so an error about a bad input can always be rendered.
    A value JSON can already carry comes back as it is (checked by the C encoder, not walked in Python:
    job views call this for every job they list)."""
    if depth == 0 and isinstance(value, dict | list):
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
            return value
        except (ValueError, TypeError, RecursionError):  # NaN, a lone surrogate, deep or odd values
            pass
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if depth > 16:
        return "…"
    if isinstance(value, dict):
        return {json_safe(k, depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return value


def is_a1111_path(path: str) -> bool:
    return path.startswith(A1111_PATHS)


def a1111_envelope(
    status: int,
    error: str,
    detail: Any,
    errors: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A1111's error body: ``{"error": <exception class>, "detail", "body", "errors"}``."""
    body = {
        "error": error,
        "detail": detail,
        "body": "",
        "errors": errors if errors is not None else str(detail),
    }
    return JSONResponse(json_safe(jsonable_encoder(body)), status_code=status, headers=headers)


def _a1111_auth_headers(request: Request) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 on an A1111 route: Basic when A1111 users are configured."""
    ctx = getattr(request.app.state, "ctx", None)
    basic = ctx is not None and bool(ctx.settings.a1111_api_auth)
    return {"WWW-Authenticate": "Basic" if basic else "Bearer"}


def envelope(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details:
        body["details"] = details
    return JSONResponse(json_safe({"error": body}), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SdfleetError)
    async def _sdfleet(request: Request, exc: SdfleetError) -> JSONResponse:
        limited = exc.headers if isinstance(exc, RateLimited) else None  # Retry-After, RateLimit-*
        if is_a1111_path(request.url.path):
            headers = _a1111_auth_headers(request) if isinstance(exc, AuthError) else limited
            # A1111's body has no field of its own: the message names it (unless it already does)
            message = (
                f"{exc.field}: {exc.message}" if exc.field and exc.field not in exc.message else exc.message
            )
            return a1111_envelope(exc.status, type(exc).__name__, message, headers=headers)
        return envelope(exc.status, exc.code, exc.message, exc.field, exc.details or None, limited)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if is_a1111_path(request.url.path):
            return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        problems = [
            {"field": _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in errors[:20]
        ]
        return envelope(
            422, "invalid_request", f"{field}: {first.get('msg', 'invalid')}", field, {"problems": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_a1111_path(request.url.path):
            return a1111_envelope(
                exc.status_code, "HTTPException", exc.detail, f"{exc.status_code}: {exc.detail}", exc.headers
            )
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled path=%s", request.url.path)
        if is_a1111_path(request.url.path):
            message = "internal error; the server log has the details"
            return a1111_envelope(500, type(exc).__name__, message)
        return envelope(500, "internal_error", "internal error; the server log has the details")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (413) — by Content-Length up front, and by
    counting while streaming when the length is not declared. Paths under ``exempt`` (streamed
    uploads with their own limit) are skipped."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(scope, receive, send)
                    return
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"the request body is larger than {limit} bytes", field="body")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        if is_a1111_path(scope["path"]):
            response = a1111_envelope(413, PayloadTooLarge.__name__, message)
        else:
            response = envelope(413, "payload_too_large", message, "body")
        await response(scope, receive, send)
