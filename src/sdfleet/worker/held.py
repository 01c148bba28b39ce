"""What a worker holds: the jobs it has a lease on (:class:`HeldJob`, in a :class:`Phase`) and the
counters of one run (:class:`WorkerStats`). Plain records; no I/O."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sdfleet.wire import ClaimedJob


class Phase(StrEnum):
    """Where a held job is on this worker."""

    WAITING = "waiting"  # claimed, not started (inputs and models prefetching)
    RUNNING = "running"  # on the engine
    FINISHING = "finishing"  # encoding, uploading, completing
    REPORTING = "reporting"  # a fail or release is on its way: no more heartbeats


@dataclass(slots=True)
class WorkerStats:
    """Counters and times of one worker run. Times are ``time.monotonic()`` seconds.

    ``duty_cycle`` is engine busy time over wall time since the worker started (until it stopped,
    or now); benchmarks that want "while work was queued" use ``started_at``,
    ``last_engine_end_at`` and ``last_completed_at``.
    """

    started_at: float | None = None
    stopped_at: float | None = None
    first_claim_at: float | None = None
    first_engine_start_at: float | None = None
    last_engine_end_at: float | None = None
    last_completed_at: float | None = None
    engine_busy_seconds: float = 0.0
    jobs_claimed: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_canceled: int = 0
    jobs_released: int = 0
    jobs_lost: int = 0
    jobs_stale: int = 0
    images: int = 0
    bytes_uploaded: int = 0
    max_held: int = 0

    @property
    def wall_seconds(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.stopped_at if self.stopped_at is not None else time.monotonic()
        return max(0.0, end - self.started_at)

    @property
    def duty_cycle(self) -> float:
        wall = self.wall_seconds
        return self.engine_busy_seconds / wall if wall > 0 else 0.0


@dataclass(eq=False)
class HeldJob:
    """A job this worker holds a lease on, from claim until it is reported (or dropped)."""

    claim: ClaimedJob
    claimed_at: float
    phase: Phase = Phase.WAITING
    step: int = 0
    total: int = 0
    engine_seconds: float = 0.0
    cancel: bool = False
    lost: bool = False
    interrupt: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    inputs: asyncio.Task[dict[str, str]] | None = None  # ref → data URL, fetched while waiting
    models: asyncio.Task[dict[tuple[str, str], Path]] | None = None  # (kind, name) → file, prefetched
    pinned: list[str] = field(default_factory=list)  # cache blobs kept from eviction while we hold the job
    info: dict[str, float] | None = None  # progress beyond step/total (training: loss, it_per_s, eta_seconds)

    @property
    def id(self) -> str:
        return self.claim.job_id

    @property
    def epoch(self) -> int:
        return self.claim.epoch

    def should_stop(self) -> bool:
        return self.cancel or self.lost or self.interrupt


__all__ = ["HeldJob", "Phase", "WorkerStats"]
