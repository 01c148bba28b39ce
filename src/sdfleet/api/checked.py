"""A route class that checks what a request carries before FastAPI reads it: path and query parameters hold
no NUL, and a JSON body is decoded once, strictly, by :func:`sdfleet.validation.loads_json` (valid UTF-8,
finite numbers, storable strings, bounded nesting) — the route then gets that very value, so nothing is
parsed twice. Routers of user-facing APIs use it (``APIRouter(route_class=CheckedRoute)``); a problem is
a 422 naming the field, in the envelope of the API the path belongs to."""

from __future__ import annotations

import email.message
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope

from sdfleet.config import Limits
from sdfleet.errors import ValidationError
from sdfleet.validation import body_checked, loads_json

_DEFAULT_LIMITS = Limits()


def json_depth_limit(request: Request) -> int:
    """The deepest JSON this app accepts (``Limits.max_json_depth``)."""
    ctx = getattr(request.app.state, "ctx", None)
    limits: Limits = ctx.settings.limits if ctx is not None else _DEFAULT_LIMITS
    return limits.max_json_depth


async def checked_json(request: Request) -> Any:
    """The request's body as checked JSON (None when it is empty), for routes that read their body by hand."""
    if isinstance(request, _CheckedJsonRequest):
        return await request.json()
    body = await request.body()
    return loads_json(body, max_depth=json_depth_limit(request)) if body else None


def check_params(request: Request) -> None:
    """Path and query parameters: no NUL (the SQL store cannot hold one and a lookup by it fails)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError(f"{name}: must not contain NUL characters", field=name)
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise ValidationError(f"{name}: must not contain NUL characters", field=name.replace("\x00", ""))


def _is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON: no content type, ``application/json`` or ``application/*+json``."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class _CheckedJsonRequest(Request):
    """A request whose body has been read and checked: ``body()`` and ``json()`` answer from memory (the
    pattern of FastAPI's "custom Request and APIRoute class" recipe)."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes, value: Any) -> None:
        super().__init__(scope, receive)
        self._checked_body = body
        self._checked_value = value

    async def body(self) -> bytes:
        return self._checked_body

    async def json(self) -> Any:
        return self._checked_value

    async def stream(self) -> AsyncGenerator[bytes, None]:
        yield self._checked_body
        yield b""


class CheckedRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` that checks parameters and the JSON body first (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_json = self.body_field is not None

        async def checked(request: Request) -> Response:
            check_params(request)
            wants = reads_json and request.method in ("POST", "PUT", "PATCH")
            if wants and _is_json(request.headers.get("content-type")):
                body = await request.body()
                if body:
                    value = loads_json(body, max_depth=json_depth_limit(request))
                    request = _CheckedJsonRequest(request.scope, request.receive, body, value)
                    with body_checked():  # the body models need not walk it again
                        return await handler(request)
            return await handler(request)

        return checked
