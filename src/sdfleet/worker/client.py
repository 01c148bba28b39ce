"""The worker's HTTP client for the worker protocol (``/v1/worker/*``), on one keep-alive
``httpx.AsyncClient``.

Every call is retried with exponential backoff and jitter on connection errors, timeouts, 429 and
5xx, so a worker rides out an orchestrator restart without losing results; a 4xx is raised as the
matching error of :mod:`sdfleet.errors` (409 stale lease → :class:`~sdfleet.errors.StaleLease`).
Uploads PUT bytes to the URL the claim gave: a relative URL is on the orchestrator (sent with the
worker token), an absolute one is a presigned object-store URL (sent without it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel

from sdfleet.errors import (
    AuthError,
    Conflict,
    Forbidden,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    SdfleetError,
    StaleLease,
    ValidationError,
    WorkerQuarantined,
)
from sdfleet.wire import (
    CheckpointAnswer,
    CheckpointReport,
    CheckpointUploadRequest,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    CompleteResponse,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    ModelSource,
    ModelUrlRequest,
    RegisterRequest,
    RegisterResponse,
    ReleaseRequest,
    StopRequest,
    UploadRequest,
    UploadTarget,
)

log = logging.getLogger("sdfleet.worker.client")

M = TypeVar("M", bound=BaseModel)

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_BY_CODE: dict[str, type[SdfleetError]] = {
    cls.code: cls
    for cls in (
        StaleLease,
        Conflict,
        NotFound,
        AuthError,
        Forbidden,
        WorkerQuarantined,
        ValidationError,
        LimitExceeded,
        PayloadTooLarge,
    )
}
_BY_STATUS: dict[int, type[SdfleetError]] = {
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
}


class ClientError(SdfleetError):
    """The orchestrator refused a worker call with a 4xx that no more specific error describes."""

    code = "client_error"


class Unreachable(SdfleetError):
    """The orchestrator did not answer successfully before the call's retry deadline."""

    status = 503
    code = "unreachable"


def error_from_response(response: httpx.Response) -> SdfleetError:
    """The typed error for a 4xx answer, from the ``{"error": {code, message, field}}`` envelope."""
    code = message = field = None
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code, message, field = err.get("code"), err.get("message"), err.get("field")
    except ValueError:
        pass
    cls = _BY_CODE.get(str(code)) or _BY_STATUS.get(response.status_code) or ClientError
    text = str(message or response.text[:500] or response.reason_phrase)
    error = cls(text, field=str(field) if field else None)
    error.details = {"status": response.status_code, "code": code}
    return error


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base · 2^n))``, at least ``floor``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, floor: float = 0.02) -> None:
        self.base = base
        self.cap = cap
        self.floor = floor

    def delay(self, attempt: int) -> float:
        return max(self.floor, random.uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30))))


class WorkerClient:
    """Async client of the worker protocol. One instance per worker; close it with :meth:`aclose`.

    ``retry_for`` bounds how long a call keeps retrying (``None``: until it gets an answer, which is
    what results need); ``transport`` lets tests and benchmarks wrap the network (latency, faults).
    """

    def __init__(
        self,
        server: str,
        token: str = "",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        retry_for: float | None = None,
        user_agent: str = "sdfleet-worker",
    ) -> None:
        self.server = server.rstrip("/") + "/"
        self.token = token
        self.backoff = backoff or Backoff()
        self.retry_for = retry_for
        self._origin = _origin(self.server)
        headers = {"user-agent": user_agent}
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers=headers,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        await self._http.aclose()

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ protocol calls
    async def register(self, body: RegisterRequest, *, retry_for: float | None = None) -> RegisterResponse:
        return await self._call("register", body, RegisterResponse, retry_for=retry_for)

    async def claim(self, body: ClaimRequest, *, retry_for: float | None = None) -> ClaimResponse:
        # a long poll: let the read timeout outlast the server's wait
        timeout = body.wait + 30.0
        return await self._call("claim", body, ClaimResponse, retry_for=retry_for, read_timeout=timeout)

    async def heartbeat(self, body: HeartbeatRequest, *, retry_for: float | None = None) -> HeartbeatResponse:
        return await self._call("heartbeat", body, HeartbeatResponse, retry_for=retry_for)

    async def upload_target(self, body: UploadRequest, *, retry_for: float | None = None) -> UploadTarget:
        """Ask for a fresh upload URL for one output (when the claim's one expired)."""
        return await self._call("upload", body, UploadTarget, retry_for=retry_for)

    async def complete(self, body: CompleteRequest, *, retry_for: float | None = None) -> CompleteResponse:
        return await self._call("complete", body, CompleteResponse, retry_for=retry_for)

    async def fail(self, body: FailRequest, *, retry_for: float | None = None) -> None:
        await self._post("fail", body, retry_for=retry_for)

    async def release(self, body: ReleaseRequest, *, retry_for: float | None = None) -> None:
        await self._post("release", body, retry_for=retry_for)

    async def stop(self, body: StopRequest, *, retry_for: float | None = None) -> None:
        await self._post("stop", body, retry_for=retry_for)

    async def model_url(self, body: ModelUrlRequest, *, retry_for: float | None = 60.0) -> ModelSource:
        """A model's registry entry with a fresh download URL (a presigned one expired)."""
        return await self._call("models/url", body, ModelSource, retry_for=retry_for)

    async def checkpoint_upload(
        self, job_id: str, body: CheckpointUploadRequest, *, retry_for: float | None = 120.0
    ) -> UploadTarget:
        """Where to PUT a training checkpoint of a job this worker holds."""
        return await self._call(f"jobs/{job_id}/checkpoint/upload", body, UploadTarget, retry_for=retry_for)

    async def checkpoint(
        self, job_id: str, body: CheckpointReport, *, retry_for: float | None = 120.0
    ) -> CheckpointAnswer:
        """Record a stored training checkpoint (fenced by the lease epoch: StaleLease when not ours)."""
        return await self._call(f"jobs/{job_id}/checkpoint", body, CheckpointAnswer, retry_for=retry_for)

    async def put_blob(
        self,
        url: str,
        data: bytes,
        content_type: str,
        *,
        retry_for: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """PUT ``data`` to an upload URL (relative: on the orchestrator; absolute: presigned), with
        the ``headers`` the upload target asks for. Uploads never overwrite: a conditional PUT that
        finds an object already at this attempt's key (412, an earlier try of ours that landed) is
        done; other bytes there are the orchestrator's 409."""
        target = self.resolve(url)
        sent = {**(headers or {}), "content-type": content_type}
        if _origin(target) == self._origin:
            sent.update(self._auth)
        try:
            await self._send("PUT", target, content=data, headers=sent, retry_for=retry_for, what="upload")
        except SdfleetError as exc:
            if (exc.details or {}).get("status") != 412:
                raise

    async def get_blob(self, url: str, *, retry_for: float | None = 120.0) -> bytes:
        """GET an input from a signed URL (relative: on the orchestrator; absolute: presigned)."""
        target = self.resolve(url)
        headers = dict(self._auth) if _origin(target) == self._origin else {}
        response = await self._send(
            "GET", target, content=b"", headers=headers, retry_for=retry_for, what="input"
        )
        return response.content

    def resolve(self, url: str) -> str:
        """An absolute URL for ``url`` (relative ones are joined with the server URL)."""
        return urljoin(self.server, url.lstrip("/")) if not urlsplit(url).scheme else url

    @staticmethod
    def is_local(url: str) -> bool:
        """Whether an upload URL is on the orchestrator (relative), i.e. the blob store is local."""
        return not urlsplit(url).scheme

    # ------------------------------------------------------------------ transport
    async def _call(
        self,
        name: str,
        body: BaseModel,
        answer: type[M],
        *,
        retry_for: float | None,
        read_timeout: float | None = None,
    ) -> M:
        response = await self._post(name, body, retry_for=retry_for, read_timeout=read_timeout)
        return answer.model_validate_json(response.content)

    async def _post(
        self, name: str, body: BaseModel, *, retry_for: float | None, read_timeout: float | None = None
    ) -> httpx.Response:
        return await self._send(
            "POST",
            urljoin(self.server, f"v1/worker/{name}"),
            content=body.model_dump_json(exclude_none=True).encode(),
            headers={"content-type": "application/json", **self._auth},
            retry_for=retry_for,
            read_timeout=read_timeout,
            what=name,
        )

    async def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: dict[str, str],
        retry_for: float | None,
        what: str,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        budget = self.retry_for if retry_for is None else retry_for
        deadline = None if budget is None else time.monotonic() + budget
        timeout = None
        if read_timeout is not None:
            base = self._http.timeout
            timeout = httpx.Timeout(base.connect, read=read_timeout, write=base.write, pool=base.pool)
        attempt = 0
        while True:
            problem: str
            retry_after: float | None = None
            try:
                request = self._http.build_request(
                    method, url, content=content, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT
                )
                response = await self._http.send(request)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if self._closed:
                    raise Unreachable(f"{what}: the client is closed") from exc
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUS:
                    raise error_from_response(response)
                problem = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
            delay = self.backoff.delay(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise Unreachable(f"{what}: gave up after {attempt + 1} attempts ({problem})")
            # quiet for blips; then a warning now and then, not one per retry of a long outage
            level = (
                logging.WARNING
                if attempt in (2, 5) or (attempt >= 10 and attempt % 10 == 0)
                else logging.DEBUG
            )
            log.log(
                level,
                "client.retry call=%s attempt=%d delay=%.2f problem=%s",
                what,
                attempt + 1,
                delay,
                problem,
            )
            attempt += 1
            await asyncio.sleep(delay)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return min(30.0, max(0.0, float(value)))
    except ValueError:
        return None


__all__ = [
    "Backoff",
    "ClientError",
    "Unreachable",
    "WorkerClient",
    "error_from_response",
]
