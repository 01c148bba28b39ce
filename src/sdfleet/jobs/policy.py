"""The job system's decisions as pure functions (no database, no clock): who may write for a job,
what a reported failure or an interruption does to the job and to the worker, when a worker is
quarantined, and why nobody can serve a job.

:class:`JobPolicy` holds the numbers (built once from the settings); the use cases read what a
decision needs inside their transaction, ask here, and apply the answer. The unit tests
(``tests/unit/jobs/test_policy.py``) hold the rules without a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sdfleet.config import Settings
from sdfleet.domain import Job, JobState, Requirements, WorkerInfo
from sdfleet.jobs.blobkeys import AttemptKey, attempt_key
from sdfleet.jobs.types import Completion, CompletionResult

UNSERVABLE_PREFIX = "no worker"
"""How every "nobody can serve this job" wait reason starts (so the reaper can tell its own)."""

INVALID_INPUT = "invalid_input"
"""The error code of a job whose input cannot be processed (an image that does not decode, a spec
the engine rejects): the input's fault, so it fails the job at once, counts against no worker and
quarantines nothing."""

USER_ERROR_CODES = frozenset({INVALID_INPUT})
"""Failure codes that blame the job, not the worker that reported them."""

INFRASTRUCTURE_CODES = frozenset({"interrupted", "input_unavailable", "complete_rejected", "canceled"})
"""Retryable failure codes that say nothing about the job itself (the network, the orchestrator, a
stop): they never make a job fail "the same way on several workers"."""

SAME_FAILURE_WORKERS = 2
"""A job that failed the same way (code and reason) on this many distinct workers is failed for
good: the job is the common factor, so retrying it fleet-wide would only spread the failure."""


# ===================================================================== fencing


def holds(job: Job | None, worker_id: str, epoch: int) -> bool:
    """Whether ``worker_id`` holds ``job`` at lease ``epoch`` and may still write for it: the lease
    is current and the job is not finished. A lease that ran out but that nobody took since (queued,
    same epoch, same worker) still counts, as for completions and heartbeats."""
    return (
        job is not None
        and job.lease_epoch == epoch
        and job.lease_worker == worker_id
        and job.state in (JobState.RUNNING, JobState.QUEUED)
    )


def writable(job: Job | None, epoch: int) -> bool:
    """Whether an upload for ``job`` at ``epoch`` may be stored (a signed URL names no worker: the
    epoch must be current and held by someone, and the job not finished)."""
    return (
        job is not None
        and job.lease_epoch == epoch
        and job.lease_worker is not None
        and job.state in (JobState.RUNNING, JobState.QUEUED)
    )


def upload_allowed(key: AttemptKey | None, job: Job | None) -> bool:
    """Whether an upload to ``key`` may be stored now: a per-attempt key of this very job (its
    tenant, an output index it has), at the job's current, held, unfinished epoch."""
    if key is None or job is None or key.job_id != job.id or key.tenant != job.tenant:
        return False
    if key.kind == "outputs" and key.number >= job.images_expected:
        return False
    return writable(job, key.epoch)


def completion_verdict(job: Job | None, c: Completion, worker_id: str) -> CompletionResult | None:
    """Why a completion cannot be accepted (None: it can). A job whose lease ran out but that
    nobody took since still has this epoch: its result is accepted rather than wasted."""
    if job is None:
        return CompletionResult(c.job_id, "stale", "no such job")
    if job.lease_epoch != c.epoch or job.lease_worker != worker_id:
        return CompletionResult(
            c.job_id, "stale", f"lease epoch {c.epoch} is not current ({job.lease_epoch})"
        )
    if job.state == JobState.SUCCEEDED:
        return CompletionResult(c.job_id, "duplicate", "already recorded")
    if job.state not in (JobState.RUNNING, JobState.QUEUED):
        return CompletionResult(c.job_id, "stale", f"job is {job.state.value}")
    return None


# ===================================================================== failures


@dataclass(frozen=True, slots=True)
class PastFailure:
    """A failed attempt of the job, as the failure policy sees it."""

    worker_id: str
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What a reported failure does: ``requeue`` (run elsewhere) or ``fail`` (for good, with
    ``code``/``message``); ``blames_worker``: whether it counts toward the worker's quarantine;
    ``absolve``: workers whose earlier failures of this job no longer count against them (the job
    failed the same way on each)."""

    action: str  # "requeue" | "fail"
    code: str
    message: str
    blames_worker: bool
    absolve: frozenset[str] = frozenset()


_VARIABLE = re.compile(r"0x[0-9a-f]+|[0-9a-f]{8,}|\d+(\.\d+)?", re.IGNORECASE)


def failure_signature(code: str | None, message: str | None) -> str:
    """What makes two failures "the same": the code and the reason, with numbers and ids (call
    counters, addresses, timings) blanked so two workers' words for one problem compare equal."""
    reason = _VARIABLE.sub("#", (message or "").strip().lower())[:200]
    return f"{code or ''}:{reason}"


def is_user_error(code: str | None) -> bool:
    """Whether a failure code blames the job's input rather than the worker."""
    return code in USER_ERROR_CODES


def decide_failure(
    *,
    worker_id: str,
    code: str,
    message: str,
    retryable: bool,
    failures: int,
    max_failures: int,
    history: Sequence[PastFailure] = (),
    same_failure_workers: int = SAME_FAILURE_WORKERS,
) -> FailureDecision:
    """The fate of a job whose attempt on ``worker_id`` just failed with ``code``/``message``.

    ``failures``: the job's failures before this one; ``history``: its earlier failed attempts (every
    worker, refunded or not — they are evidence about the job either way).

    - a user error (``invalid_input``) fails the job at once and blames nobody;
    - a failure the job already had, the same way, on other workers (``same_failure_workers``
      distinct ones in all, this one included) fails it for good and blames none of them;
    - otherwise a retryable failure within the budget re-queues the job, anything else fails it —
      and the worker is blamed (toward quarantine).
    """
    if is_user_error(code):
        return FailureDecision("fail", code, f"{message} (the job's input cannot be processed)", False)
    signature = failure_signature(code, message)
    if code not in INFRASTRUCTURE_CODES:
        same = {p.worker_id for p in history if failure_signature(p.code, p.message) == signature}
        same.add(worker_id)
        if len(same) >= max(2, same_failure_workers):
            why = f"failed the same way on {len(same)} workers"
            return FailureDecision("fail", code, f"{message} ({why})", False, frozenset(same))
    failures += 1
    if retryable and failures < max_failures:
        return FailureDecision("requeue", code, message, True)
    why = "not retryable" if not retryable else f"failed {failures} times"
    return FailureDecision("fail", code, f"{message} ({why})", True)


# ===================================================================== quarantine


@dataclass(frozen=True, slots=True)
class CountedFailure:
    """A failed attempt of a worker within the quarantine window."""

    job_id: str
    code: str | None
    refunded: bool = False


def blamed_jobs(failures: Iterable[CountedFailure]) -> set[str]:
    """The distinct jobs whose failures count against the worker (not refunded, not the input's fault)."""
    return {f.job_id for f in failures if not f.refunded and not is_user_error(f.code)}


def should_quarantine(failures: Iterable[CountedFailure], threshold: int) -> bool:
    """Whether a worker's recent failures quarantine it: ``threshold`` distinct blamed jobs."""
    return len(blamed_jobs(failures)) >= threshold


# ===================================================================== interruptions


@dataclass(frozen=True, slots=True)
class InterruptionDecision:
    """What an interruption does: ``requeue`` (with the new ``interruptions`` count) or ``fail``
    (``too_many_interruptions``, with ``message``), or ``cancel`` when the client asked for it."""

    action: str  # "requeue" | "fail" | "cancel"
    interruptions: int
    message: str = ""


def decide_interruption(
    *, interruptions: int, max_interruptions: int, cancel_requested: bool, reason: str
) -> InterruptionDecision:
    """The fate of a job that lost its worker through no fault of its own (``interruptions``: the
    job's count before this one). Not a failure: it has its own cap."""
    if cancel_requested:
        return InterruptionDecision("cancel", interruptions)
    count = interruptions + 1
    if count > max_interruptions:
        return InterruptionDecision("fail", count, f"interrupted {count} times; last: {reason}")
    return InterruptionDecision("requeue", count)


# ===================================================================== unservable jobs


def why_unservable(req: Requirements, online: Sequence[WorkerInfo]) -> str | None:
    """Why no online worker can take a job with ``req`` (None: one can)."""
    if any(w.capabilities.accepts(req) for w in online):
        return None
    if not online:
        return f"{UNSERVABLE_PREFIX} is online"
    reasons = sorted({w.capabilities.why_not(req) or "" for w in online} - {""})
    return f"{UNSERVABLE_PREFIX} online can take it ({req.describe()}): every worker " + "; ".join(reasons)


# ===================================================================== the numbers


@dataclass(frozen=True, slots=True)
class QuarantineVerdict:
    """A worker to quarantine: the distinct jobs it is blamed for, and the reason to record."""

    jobs: frozenset[str]
    reason: str


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """The job system's limits, built once from the settings, and the decisions that use them."""

    max_failures: int = 3
    max_interruptions: int = 10
    quarantine_failures: int = 3
    quarantine_window: float = 600.0
    quarantine_seconds: float = 3600.0
    unservable_after: float = 600.0
    same_failure_workers: int = SAME_FAILURE_WORKERS

    @classmethod
    def from_settings(cls, settings: Settings) -> JobPolicy:
        return cls(
            max_failures=settings.max_failures,
            max_interruptions=settings.max_interruptions,
            quarantine_failures=settings.quarantine_failures,
            quarantine_window=settings.quarantine_window,
            quarantine_seconds=settings.quarantine_seconds,
            unservable_after=settings.unservable_after,
        )

    def after_failure(
        self,
        *,
        worker_id: str,
        code: str,
        message: str,
        retryable: bool,
        failures: int,
        history: Sequence[PastFailure] = (),
    ) -> FailureDecision:
        """:func:`decide_failure` within this policy's retry budget."""
        return decide_failure(
            worker_id=worker_id,
            code=code,
            message=message,
            retryable=retryable,
            failures=failures,
            max_failures=self.max_failures,
            history=history,
            same_failure_workers=self.same_failure_workers,
        )

    def after_interruption(
        self, *, interruptions: int, cancel_requested: bool, reason: str
    ) -> InterruptionDecision:
        """:func:`decide_interruption` within this policy's interruption cap."""
        return decide_interruption(
            interruptions=interruptions,
            max_interruptions=self.max_interruptions,
            cancel_requested=cancel_requested,
            reason=reason,
        )

    def quarantine_verdict(
        self, failures: Sequence[CountedFailure], last_error: str | None
    ) -> QuarantineVerdict | None:
        """Whether a worker's failures within the window quarantine it (None: not yet)."""
        if not should_quarantine(failures, self.quarantine_failures):
            return None
        distinct = blamed_jobs(failures)
        reason = (
            f"failed {len(distinct)} distinct jobs within {self.quarantine_window:.0f} s; "
            f"last error: {last_error}"
        )
        return QuarantineVerdict(frozenset(distinct), reason)

    def expires(self, waited: float) -> bool:
        """Whether a job nobody can serve has waited long enough to expire."""
        return waited > self.unservable_after


__all__ = [
    "INFRASTRUCTURE_CODES",
    "INVALID_INPUT",
    "SAME_FAILURE_WORKERS",
    "UNSERVABLE_PREFIX",
    "USER_ERROR_CODES",
    "AttemptKey",
    "CountedFailure",
    "FailureDecision",
    "InterruptionDecision",
    "JobPolicy",
    "PastFailure",
    "QuarantineVerdict",
    "attempt_key",
    "blamed_jobs",
    "completion_verdict",
    "decide_failure",
    "decide_interruption",
    "failure_signature",
    "holds",
    "is_user_error",
    "should_quarantine",
    "upload_allowed",
    "why_unservable",
    "writable",
]
