"""One error tree for sdfleet.

Every error the system raises on purpose derives from :class:`SdfleetError`. Each class carries an
HTTP status and a stable machine-readable ``code``; the API layer turns any of them into the one
JSON envelope ``{"error": {"code", "message", "field"}}`` without knowing the individual classes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SdfleetError(Exception):
    """Base of every deliberate sdfleet error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(SdfleetError):
    """Settings are inconsistent or unsafe (for example a public bind without API keys)."""

    code = "config_error"


class ValidationError(SdfleetError):
    """A request field is missing, malformed or outside a limit."""

    status = 422
    code = "invalid_request"


class LimitExceeded(ValidationError):
    """A request exceeds a configured limit (pixels, steps, batch, prompt length, body size)."""

    code = "limit_exceeded"


class PayloadTooLarge(SdfleetError):
    """The request body is larger than the configured maximum."""

    status = 413
    code = "payload_too_large"


class AuthError(SdfleetError):
    """No credentials, or credentials that are unknown or revoked."""

    status = 401
    code = "unauthorized"


class Forbidden(SdfleetError):
    """Valid credentials whose scope does not reach this endpoint."""

    status = 403
    code = "forbidden"


class NotFound(SdfleetError):
    """The thing does not exist, or belongs to another tenant (never tell them apart)."""

    status = 404
    code = "not_found"


class Conflict(SdfleetError):
    """The request is valid but loses against the current state of the job."""

    status = 409
    code = "conflict"


class StaleLease(Conflict):
    """A worker spoke for a job with a lease epoch that is no longer current."""

    code = "stale_lease"


class WorkerQuarantined(Forbidden):
    """The worker failed too many distinct jobs and is kept away from work for a while."""

    code = "worker_quarantined"


class RateLimited(SdfleetError):
    """A tenant is over a quota or rate limit for now; ``headers`` say when to retry
    (``Retry-After``, ``RateLimit-*``)."""

    status = 429
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message, field=field, details=details)
        self.headers = headers or {}


class ServiceUnavailable(SdfleetError):
    """A dependency (database, blob store) is not reachable right now; the call may be retried."""

    status = 503
    code = "unavailable"


class RequestTimeout(SdfleetError):
    """A call that waits for a job (the A1111 API's txt2img/img2img) gave up; the job was canceled."""

    status = 504
    code = "timeout"


class EngineError(SdfleetError):
    """The engine could not produce a result. ``retryable`` says whether another try may succeed."""

    code = "engine_error"

    def __init__(self, message: str, *, retryable: bool = True, field: str | None = None):
        super().__init__(message, field=field)
        self.retryable = retryable


class InvalidInput(EngineError, ValidationError):
    """The job's input cannot be processed (an image that does not decode or is too large once
    decoded, a spec the engine rejects): the input's fault, never the worker's. Workers report it as
    the non-retryable ``invalid_input`` failure, which counts against no worker. ``field`` names the
    job field when known."""

    status = 422
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message, retryable=False, field=field)


class Interrupted(SdfleetError):
    """Generation stopped between steps because it was asked to (cancel, skip, shutdown)."""

    code = "interrupted"


class ModelUnavailable(EngineError):
    """A model a job needs could not be fetched or verified on this worker (download failed, sha256
    mismatch, a format the worker refuses). ``retryable`` says whether another try may succeed."""

    code = "model_unavailable"
