"""The job system's decisions as pure functions (no database, no clock): who may write for a job,
what a reported failure does to the job and to the worker, and when a worker is quarantined.

:class:`sdfleet.jobs.service.JobService` reads what a decision needs inside its transaction, asks
here, and applies the answer; the unit tests (``tests/unit/jobs/test_policy.py``) hold the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sdfleet.domain import Job, JobState

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


@dataclass(frozen=True, slots=True)
class AttemptKey:
    """A blob key that belongs to one attempt of one job: ``outputs/<tenant>/<job>/<epoch>-<index>.<ext>``
    or ``checkpoints/<tenant>/<job>/<epoch>-<step>.safetensors``."""

    kind: str  # "outputs" | "checkpoints"
    tenant: str
    job_id: str
    epoch: int
    number: int  # output index or checkpoint step


_ATTEMPT_KEY = re.compile(
    r"^(?P<kind>outputs|checkpoints)/(?P<tenant>[^/]+)/(?P<job>[^/]+)/(?P<epoch>\d{1,18})-(?P<n>\d{1,18})\.[a-z0-9]{1,16}$"
)


def attempt_key(key: str) -> AttemptKey | None:
    """Parse a per-attempt blob key (None: not one)."""
    m = _ATTEMPT_KEY.match(key)
    if m is None:
        return None
    return AttemptKey(m["kind"], m["tenant"], m["job"], int(m["epoch"]), int(m["n"]))


def upload_allowed(key: AttemptKey | None, job: Job | None) -> bool:
    """Whether an upload to ``key`` may be stored now: a per-attempt key of this very job (its
    tenant, an output index it has), at the job's current, held, unfinished epoch."""
    if key is None or job is None or key.job_id != job.id or key.tenant != job.tenant:
        return False
    if key.kind == "outputs" and key.number >= job.images_expected:
        return False
    return writable(job, key.epoch)


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
