"""Quotas, rate limits and their pricing (issue 14), pure: no I/O here.

A tenant's limits are the settings' defaults (:class:`sdfleet.config.Quotas`) with the overrides an
admin set for that tenant. Two of them are token buckets kept in the tenant's row of the job store and
debited in the submit's own transaction (:meth:`sdfleet.store.SqlTx.debit_buckets`), so every
replica shares them:

* ``rate``/``burst``: jobs per second on average, and at once (a batch costs its size);
* ``gpu_seconds_per_day``: estimated GPU seconds, refilled continuously at ``budget / 86400`` per second
  up to ``budget`` (a sliding day).

``max_concurrent`` (queued + running jobs) is counted in the same transaction; ``max_job_gpu_seconds``
is checked per job before anything is stored. A job's GPU seconds are estimated from the recorded
engine time of similar succeeded jobs (same kind and checkpoint, per megapixel-step), or from the
settings' default rate until there is history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdfleet.config import Quotas
from sdfleet.domain import JobKind
from sdfleet.errors import LimitExceeded, RateLimited
from sdfleet.store import Buckets, SqlTx

DAY_SECONDS = 86400.0
LIMIT_NAMES = ("rate", "burst", "max_concurrent", "gpu_seconds_per_day", "max_job_gpu_seconds", "weight")
"""The limits an admin may set per tenant."""
NULLABLE = frozenset({"rate", "max_concurrent", "gpu_seconds_per_day", "max_job_gpu_seconds"})
"""Limits that may be ``None`` (unlimited)."""
MIN_HISTORY = 3  # succeeded jobs of a kind and checkpoint before their recorded time prices new ones
CONCURRENCY_RETRY_SECONDS = 5.0


@dataclass(slots=True, frozen=True)
class TenantLimits:
    """A tenant's effective limits (``None``: unlimited) and which of them are its own overrides."""

    rate: float | None
    burst: float
    max_concurrent: int | None
    gpu_seconds_per_day: float | None
    max_job_gpu_seconds: float | None
    weight: float
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_price(self) -> bool:
        """Whether submits must estimate GPU seconds (a GPU limit is set)."""
        return self.gpu_seconds_per_day is not None or self.max_job_gpu_seconds is not None

    @property
    def gpu_rate(self) -> float | None:
        """GPU seconds the daily bucket refills per second."""
        return None if self.gpu_seconds_per_day is None else self.gpu_seconds_per_day / DAY_SECONDS

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LIMIT_NAMES}


def effective_limits(
    defaults: Quotas, overrides: Mapping[str, Any], weight: float | None = None
) -> TenantLimits:
    """The defaults with a tenant's overrides applied (unknown keys are ignored)."""
    values: dict[str, Any] = {name: getattr(defaults, name) for name in LIMIT_NAMES}
    known = {k: v for k, v in overrides.items() if k in LIMIT_NAMES}
    values.update(known)
    if weight is not None:
        values["weight"] = weight
    if values["max_concurrent"] is not None:
        values["max_concurrent"] = int(values["max_concurrent"])
    return TenantLimits(**values, overrides=known)


def check_override(name: str, value: Any) -> float | int | None:
    """One admin-set limit: a finite positive number, or ``None`` (unlimited) where that makes sense.
    Raises ``ValueError`` saying why not."""
    if name not in LIMIT_NAMES:
        raise ValueError(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
    if value is None:
        if name not in NULLABLE:
            raise ValueError(f"{name} cannot be unlimited")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    if value <= 0 or (name in ("burst",) and value < 1):
        raise ValueError(f"{name} must be greater than {'1' if name == 'burst' else '0'}")
    if name == "max_concurrent":
        if value != int(value):
            raise ValueError("max_concurrent must be a whole number")
        return int(value)
    if name == "weight" and value > 1000:
        raise ValueError("weight must be at most 1000")
    return float(value)


# ===================================================================== pricing


def work_units(kind: JobKind, spec: Mapping[str, Any]) -> float:
    """The size of a job in megapixel-steps: width × height × images × steps (plus the hires pass at
    its output size); training: resolution² × batch × steps; upscale: 4 × the input's pixels;
    annotate: the processor resolution²."""
    if kind == JobKind.TRAIN_LORA:
        side = float(spec.get("resolution") or 512)
        return side * side * float(spec.get("batch_size") or 1) * float(spec.get("steps") or 1) / 1e6
    if kind == JobKind.UPSCALE:
        # an upscaler pass over an image costs about what a few denoising steps over it cost: 4 × input pixels
        pixels = float(spec.get("input_width") or 512) * float(spec.get("input_height") or 512)
        return 4.0 * pixels / 1e6
    if kind == JobKind.ANNOTATE:  # one preprocessor pass at the processor resolution: about one step's worth
        side = float(spec.get("processor_res") or 512)
        return side * side / 1e6
    width, height = float(spec.get("width") or 512), float(spec.get("height") or 512)
    images = float(spec.get("batch_size") or 1) * float(spec.get("n_iter") or 1)
    steps = float(spec.get("steps") or 20)
    if kind == JobKind.IMG2IMG:
        steps *= max(0.05, min(1.0, float(spec.get("denoising_strength") or 0.75)))
    units = width * height * images * steps
    if spec.get("enable_hr"):
        scale = float(spec.get("hr_scale") or 2.0)
        hr_steps = float(spec.get("hr_second_pass_steps") or 0) or steps
        units += width * height * scale * scale * images * hr_steps
    return units / 1e6


@dataclass(slots=True)
class Pricing:
    """Estimated GPU seconds per megapixel-step, by (kind, checkpoint), learned from recorded jobs."""

    default_rate: float
    default_train_rate: float
    rates: dict[tuple[str, str | None], float] = field(default_factory=dict)

    @classmethod
    def from_history(
        cls, defaults: Quotas, history: Iterable[tuple[str, str | None, Mapping[str, Any], float]]
    ) -> Pricing:
        """``history``: (kind, checkpoint, spec, engine seconds) of succeeded jobs."""
        sums: dict[tuple[str, str | None], tuple[float, float, int]] = {}
        for kind, model, spec, seconds in history:
            try:
                units = work_units(JobKind(kind), spec)
            except (TypeError, ValueError):
                continue
            if units <= 0 or not math.isfinite(seconds) or seconds <= 0:
                continue
            s, u, n = sums.get((kind, model), (0.0, 0.0, 0))
            sums[(kind, model)] = (s + seconds, u + units, n + 1)
        rates = {key: s / u for key, (s, u, n) in sums.items() if n >= MIN_HISTORY and u > 0}
        return cls(
            defaults.default_seconds_per_mpix_step, defaults.default_train_seconds_per_mpix_step, rates
        )

    def rate(self, kind: JobKind, model: str | None) -> float:
        found = self.rates.get((kind.value, model))
        if found is not None:
            return found
        return self.default_train_rate if kind == JobKind.TRAIN_LORA else self.default_rate

    def estimate(self, kind: JobKind, model: str | None, spec: Mapping[str, Any]) -> float:
        """Estimated GPU seconds of one job."""
        return work_units(kind, spec) * self.rate(kind, model)


# ===================================================================== buckets


def refilled(tokens: float | None, ts: float | None, rate: float, cap: float, now: float) -> float:
    """A bucket's tokens at ``now`` (``tokens`` None: full) — the same sum the store computes."""
    if tokens is None:
        return cap
    return min(cap, tokens + max(0.0, now - (ts if ts is not None else now)) * rate)


def seconds_until(available: float, cost: float, rate: float) -> float:
    """How long until a bucket holding ``available`` can pay ``cost``."""
    return max(0.0, (cost - available) / rate) if rate > 0 else math.inf


def retry_after_value(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(min(seconds, 10 * DAY_SECONDS))))


def rate_limit_headers(limit: float, remaining: float, reset_seconds: float, retry: float) -> dict[str, str]:
    """``Retry-After`` and the ``RateLimit-Limit``/``-Remaining``/``-Reset`` trio of a refused submit."""
    return {
        "Retry-After": retry_after_value(retry),
        "RateLimit-Limit": str(math.floor(limit)),
        "RateLimit-Remaining": str(max(0, math.floor(remaining))),
        "RateLimit-Reset": retry_after_value(reset_seconds),
    }


class _Default:
    """The sentinel of "back to the settings' default" in a change of limits."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def quota_view(
    limits: TenantLimits, buckets: Buckets | None, live: int, now: float, *, enforced: bool
) -> dict[str, Any]:
    """What a tenant may still do: each limit with what is left of it now (``None``: unlimited)."""
    rate: dict[str, Any] | None = None
    if limits.rate is not None:
        have = refilled(
            buckets.rate_tokens if buckets else None,
            buckets.rate_ts if buckets else None,
            limits.rate,
            limits.burst,
            now,
        )
        rate = {
            "per_second": limits.rate,
            "burst": limits.burst,
            "available": round(have, 3),
            "full_in_seconds": round(seconds_until(have, limits.burst, limits.rate), 3),
        }
    gpu: dict[str, Any] | None = None
    budget = limits.gpu_seconds_per_day
    if budget is not None:
        have = refilled(
            buckets.gpu_tokens if buckets else None,
            buckets.gpu_ts if buckets else None,
            budget / DAY_SECONDS,
            budget,
            now,
        )
        gpu = {"per_day": budget, "available": round(have, 3), "used": round(budget - have, 3)}
    top = limits.max_concurrent
    return {
        "enforced": enforced,
        "limits": limits.as_dict(),
        "custom": sorted(limits.overrides),
        "rate": rate,
        "concurrent": {"limit": top, "live": live, "available": None if top is None else max(0, top - live)},
        "gpu_seconds": gpu,
        "max_job_gpu_seconds": limits.max_job_gpu_seconds,
        "weight": limits.weight,
    }


log = logging.getLogger("sdfleet.jobs")


def charge_submit(tx: SqlTx, tenant: str, limits: TenantLimits, jobs: int, gpu: float, now: float) -> None:
    """Charge a submit of ``jobs`` new jobs (``gpu`` estimated GPU seconds) to the tenant's
    buckets, all or nothing, in the submit's transaction — or refuse it (:class:`RateLimited`,
    429; :class:`LimitExceeded`, 422, for what no wait can fix). The debit holds the tenant's row,
    so the live-job count after it sees every earlier submit of the tenant on any replica."""
    if limits.rate is not None and jobs > limits.burst:
        raise LimitExceeded(
            f"{jobs} jobs in one submit, this tenant's burst is {limits.burst:g}: split the batch",
            field="jobs",
            details={"limit": "burst", "allowed": limits.burst},
        )
    budget = limits.gpu_seconds_per_day
    if budget is not None and gpu > budget:
        raise LimitExceeded(
            f"the submit is estimated at {gpu:.1f} GPU seconds, more than the daily budget of {budget:g}",
            field="jobs",
            details={"limit": "gpu_seconds_per_day", "estimate": round(gpu, 3), "allowed": budget},
        )
    rate = (limits.rate, limits.burst, float(jobs)) if limits.rate is not None else None
    gpu_bucket = (budget / DAY_SECONDS, budget, gpu) if budget is not None else None
    if rate is not None or gpu_bucket is not None:
        if not tx.debit_buckets(tenant, now, rate=rate, gpu=gpu_bucket):
            raise _refusal(tx, tenant, limits, jobs, gpu, now)
    elif limits.max_concurrent is not None:
        tx.lock_tenant(tenant)
    top = limits.max_concurrent
    if top is not None:
        live = tx.count_live_jobs(tenant)
        if live + jobs > top:
            log.info("quota.refused tenant=%s limit=max_concurrent live=%d jobs=%d", tenant, live, jobs)
            raise RateLimited(
                f"tenant {tenant} has {live} jobs queued or running, the limit is {top}: "
                f"{jobs} more must wait until some finish",
                field="jobs",
                details={"limit": "max_concurrent", "allowed": top, "live": live},
                headers=rate_limit_headers(
                    top, top - live, CONCURRENCY_RETRY_SECONDS, CONCURRENCY_RETRY_SECONDS
                ),
            )


def _refusal(tx: SqlTx, tenant: str, limits: TenantLimits, jobs: int, gpu: float, now: float) -> RateLimited:
    """Which bucket could not pay, and when it will."""
    b = tx.get_buckets(tenant)
    if b is not None and limits.rate is not None:
        have = refilled(b.rate_tokens, b.rate_ts, limits.rate, limits.burst, now)
        if have < jobs:
            wait = seconds_until(have, jobs, limits.rate)
            log.info("quota.refused tenant=%s limit=rate jobs=%d wait=%.2f", tenant, jobs, wait)
            return RateLimited(
                f"tenant {tenant} may submit {limits.rate:g} jobs per second (bursts of {limits.burst:g}): "
                f"{jobs} more in {wait:.1f} s",
                field="jobs",
                details={"limit": "rate", "retry_after": round(wait, 3), "available": round(have, 3)},
                headers=rate_limit_headers(
                    limits.burst, have, seconds_until(have, limits.burst, limits.rate), wait
                ),
            )
    budget = limits.gpu_seconds_per_day or 0.0
    have = refilled(b.gpu_tokens, b.gpu_ts, budget / DAY_SECONDS, budget, now) if b else 0.0
    wait = seconds_until(have, gpu, budget / DAY_SECONDS)
    log.info("quota.refused tenant=%s limit=gpu_seconds_per_day gpu=%.2f wait=%.0f", tenant, gpu, wait)
    return RateLimited(
        f"tenant {tenant}'s GPU budget is {budget:g} s per day and {have:.1f} s are left now: "
        f"this submit ({gpu:.1f} s) fits in {wait:.0f} s",
        field="jobs",
        details={
            "limit": "gpu_seconds_per_day",
            "retry_after": round(wait, 3),
            "available": round(have, 3),
        },
        headers=rate_limit_headers(budget, have, seconds_until(have, budget, budget / DAY_SECONDS), wait),
    )
