"""Jobs that fan out: a parent job whose work runs as child jobs, in stages, on as many workers as are free.

A parent (a kind of :data:`~sdfleet.domain.PARENT_KINDS`) is stored ``waiting`` with the children of its
first stage, in the submit's transaction; no worker ever claims it. Each time one of its children ends, the
parent is advanced (after the commit, and by the reaper for any a crashed replica left behind):

- a child failed or was canceled → the parent fails with that child's reason (canceled: canceled), and
  its other live children are canceled;
- every child of the stage succeeded → its :class:`Plan` turns their outputs into the next stage's
  children, or into the parent's own output image, and the parent succeeds;
- otherwise → progress (children done / expected) and cost (the children's sum) roll up.

A child lost with a vanished worker is re-run like any job (its lease expires, it is queued again): the
parent only waits longer. Cancelling the parent cancels every live child. Two replicas advancing one parent
at once is harmless: the stage is compared and set in the parent's locked row, the loser's work is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sdfleet.blobs import BlobStore
from sdfleet.domain import EventType, Job, JobKind, JobState, Output, new_id
from sdfleet.errors import SdfleetError
from sdfleet.jobs.blobkeys import output_key
from sdfleet.jobs.registry import named_models
from sdfleet.jobs.transitions import Effects, Transitions, Writer
from sdfleet.jobs.types import Child, Clock, requirements_of
from sdfleet.store import JobStore, SqlTx

log = logging.getLogger("sdfleet.jobs")

CHILD_INDEX_LABEL = "sdfleet.child"
"""The label that numbers a child within its stage (tile order)."""
PARENT_LABEL = "sdfleet.parent"


@dataclass(slots=True)
class FinalImage:
    """One output of a parent: new bytes (``data``, stored under the parent's own key), or a child's output
    it passes on as it is (``output``: the parent's output row points at the child's blob)."""

    content_type: str
    infotext: str | None
    seed: int | None = None
    data: bytes | None = None
    output: Output | None = None


@dataclass(slots=True)
class Resume:
    """The parent runs itself now: it is queued again with ``spec`` (its children made what it needed: the
    control maps of its ControlNet units), to be claimed like any job of its kind."""

    spec: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Final:
    """A parent's result: its output images, in order, and what its ``result.info`` says."""

    images: list[FinalImage]
    info: dict[str, Any] = field(default_factory=dict)


class Plan(Protocol):
    """How one parent kind fans out: its first stage, and what each finished stage turns into."""

    def expected(self, parent: Job) -> int:
        """How many children the parent will have over all its stages (for progress)."""
        ...

    def first(self, parent: Job) -> list[Child]:
        """The children of stage 0 (stored with the parent)."""
        ...

    async def next(
        self, parent: Job, children: Sequence[Job], outputs: dict[str, list[Output]], blobs: BlobStore
    ) -> list[Child] | Final | Resume:
        """The stage after ``children`` (every one succeeded, in order): more children, the result, or the
        parent itself queued to run (:class:`Resume`)."""
        ...


def child_jobs(parent: Job, children: Sequence[Child], stage: int, now: float) -> list[Job]:
    """The :class:`Job` rows of a stage's children: the parent's tenant, priority and webhook-free; numbered."""
    jobs = []
    for index, child in enumerate(children):
        spec = child.spec.model_dump(mode="json")
        jobs.append(
            Job(
                id=new_id("j"),
                tenant=parent.tenant,
                kind=child.kind,
                state=JobState.QUEUED,
                spec=spec,
                priority=parent.priority,
                created_at=now,
                updated_at=now,
                queued_at=now,
                requirements=requirements_of(child.kind, child.spec, child.arch),
                labels={**child.labels, PARENT_LABEL: parent.id, CHILD_INDEX_LABEL: str(index)},
                parent_id=parent.id,
                stage=stage,
            )
        )
    return jobs


def insert_children(tx: SqlTx, fx: Effects, jobs: Sequence[Job], now: float) -> None:
    """Store a stage's children (queued, claimable now)."""
    uses = {j.id: [n for n in named_models(j.spec) if n != j.requirements.model] for j in jobs}
    tx.insert_jobs(jobs, {k: v for k, v in uses.items() if v})
    tx.insert_events([(j.id, j.tenant, EventType.QUEUED, {"state": "queued"}, now) for j in jobs])
    fx.work += len(jobs)


def first_output(outputs: dict[str, list[Output]], job: Job) -> Output:
    """A child's first output (a child that succeeded without one is a bug of its kind)."""
    found = sorted(outputs.get(job.id, []), key=lambda o: o.index)
    if not found:
        raise SdfleetError(f"child job {job.id} succeeded without an output")
    return found[0]


REASON_SEPARATOR = " — "


def waiting_for(parent: Job, children: Sequence[Job]) -> str | None:
    """A waiting parent's ``wait_reason``: its own (what it waits for, set when it was stored), followed by why
    a child of its current stage still waits to be claimed (nobody online can serve it), if one does."""
    base = (parent.wait_reason or "").split(REASON_SEPARATOR)[0] or None
    stuck = next(
        (c for c in children if c.stage == parent.stage and c.state == JobState.QUEUED and c.wait_reason),
        None,
    )
    if stuck is None:
        return base
    why = f"{stuck.kind.value} job {stuck.id}: {stuck.wait_reason}"
    return f"{base}{REASON_SEPARATOR}{why}" if base else why


def child_index(job: Job) -> int:
    """A child's number within its stage."""
    return int(job.labels.get(CHILD_INDEX_LABEL, "0"))


class FanOut:
    """Advances parent jobs as their children end (see the module's docstring)."""

    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        write: Writer,
        transitions: Transitions,
        plans: dict[JobKind, Plan],
        clock: Clock,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self._write = write
        self.transitions = transitions
        self.plans = plans
        self.clock = clock
        self._running: set[asyncio.Task[None]] = set()
        self._busy: dict[str, bool] = {}  # parents being advanced here → another look asked for meanwhile

    # ------------------------------------------------------------------ scheduling
    def soon(self, parent_ids: set[str]) -> None:
        """Advance ``parent_ids`` in the background (after the commit that changed their children)."""
        for parent_id in parent_ids:
            task = asyncio.get_running_loop().create_task(self._advance_logged(parent_id))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _advance_logged(self, parent_id: str) -> None:
        try:
            await self.advance(parent_id)
        except Exception:  # the reaper retries it; one parent's trouble must not reach the caller
            log.exception("fanout.advance_failed parent_id=%s", parent_id)

    async def advance_waiting(self) -> int:
        """The reaper's pass: advance every waiting parent (those a crashed replica left mid-stage)."""
        parents = await self.store.read(lambda tx: tx.waiting_parents())
        for parent in parents:
            await self._advance_logged(parent.id)
        return len(parents)

    # ------------------------------------------------------------------ the stages
    async def advance(self, parent_id: str) -> None:
        """Look at a parent's current stage and move it on (fail, next stage, success, or progress)."""
        if parent_id in self._busy:  # being advanced on this replica: look again once that is done
            self._busy[parent_id] = True
            return
        self._busy[parent_id] = False
        try:
            while True:
                await self._advance(parent_id)
                if not self._busy[parent_id]:
                    break
                self._busy[parent_id] = False
        finally:
            del self._busy[parent_id]

    async def _advance(self, parent_id: str) -> None:
        parent, children = await self.store.read(
            lambda tx: (tx.get_job(parent_id), tx.children_of(parent_id))
        )
        if parent is None or parent.state != JobState.WAITING:
            return
        current = sorted((c for c in children if c.stage == parent.stage), key=child_index)
        ended = next((c for c in current if c.state in (JobState.FAILED, JobState.CANCELED)), None)
        if ended is not None:
            await self._write(lambda tx, fx: self._end(tx, fx, parent_id, parent.stage, ended))
            return
        if not current or any(c.state != JobState.SUCCEEDED for c in current):
            await self._write(lambda tx, fx: self._progress(tx, fx, parent_id, children))
            return
        plan = self.plans[parent.kind]
        ids = [c.id for c in current]
        outputs = await self.store.read(lambda tx: tx.outputs_for_jobs(ids))
        step = await plan.next(parent, current, outputs, self.blobs)
        if isinstance(step, Final):
            rows = await self._store_final(parent, step)
            await self._write(
                lambda tx, fx: self._succeed(tx, fx, parent_id, parent.stage, children, rows, step)
            )
        elif isinstance(step, Resume):
            await self._write(lambda tx, fx: self._resume(tx, fx, parent_id, parent.stage, children, step))
        else:
            await self._write(
                lambda tx, fx: self._next_stage(tx, fx, parent_id, parent.stage, children, step)
            )

    async def _store_final(self, parent: Job, final: Final) -> list[Output]:
        """The parent's output rows: new images written under its own keys, passed-on ones as they are."""
        now = self.clock()
        rows = []
        for index, image in enumerate(final.images):
            sha: str | None
            if image.data is not None:
                key = output_key(parent, 0, index, image.content_type)
                await self.blobs.put(key, image.data, image.content_type)
                size, sha = len(image.data), hashlib.sha256(image.data).hexdigest()
            else:
                assert image.output is not None
                key, size, sha = image.output.blob_key, image.output.size, image.output.sha256
            rows.append(
                Output(
                    job_id=parent.id,
                    index=index,
                    blob_key=key,
                    content_type=image.content_type,
                    size=size,
                    seed=image.seed,
                    infotext=image.infotext,
                    created_at=now,
                    sha256=sha,
                )
            )
        return rows

    def _locked_parent(self, tx: SqlTx, parent_id: str, stage: int) -> Job | None:
        parent = tx.get_job(parent_id, lock=True)
        if parent is None or parent.state != JobState.WAITING or parent.stage != stage:
            return None  # ended, or another replica moved it on
        return parent

    def _progress(self, tx: SqlTx, fx: Effects, parent_id: str, children: Sequence[Job]) -> None:
        parent = tx.get_job(parent_id, lock=True)
        if parent is None or parent.state != JobState.WAITING:
            return
        done = sum(c.state == JobState.SUCCEEDED for c in children)
        total = max(self.plans[parent.kind].expected(parent), len(children))
        cost = sum(c.cost_usd for c in children)
        reason = waiting_for(parent, children)
        unchanged = (done, total) == (parent.progress_step, parent.progress_total) and cost == parent.cost_usd
        if unchanged and reason == parent.wait_reason:
            return
        now = self.clock()
        tx.update_job(
            parent_id,
            progress_step=done,
            progress_total=total,
            cost_usd=cost,
            engine_seconds=sum(c.engine_seconds for c in children),
            wait_reason=reason,
            updated_at=now,
        )
        if unchanged:  # only the reason changed: no progress event
            fx.jobs.add(parent_id)
            return
        tx.insert_events(
            [
                (
                    parent_id,
                    parent.tenant,
                    EventType.PROGRESS,
                    {"step": done, "total": total, "children": True},
                    now,
                )
            ]
        )
        fx.jobs.add(parent_id)

    def _end(self, tx: SqlTx, fx: Effects, parent_id: str, stage: int, child: Job) -> None:
        parent = self._locked_parent(tx, parent_id, stage)
        if parent is None:
            return
        now = self.clock()
        self.cancel_children(tx, fx, parent, now)
        children = tx.children_of(parent_id)
        parent.cost_usd = sum(c.cost_usd for c in children)
        parent.engine_seconds = sum(c.engine_seconds for c in children)
        if child.state == JobState.CANCELED:
            self.transitions.finish(
                tx,
                fx,
                parent,
                JobState.CANCELED,
                now,
                code="canceled",
                message=f"child job {child.id} was canceled",
            )
            return
        what = f"{child.kind.value} {child_index(child) + 1} of stage {stage + 1}"
        self.transitions.finish(
            tx,
            fx,
            parent,
            JobState.FAILED,
            now,
            code=child.error_code or "child_failed",
            message=f"{what} (job {child.id}) failed: {child.error_message or child.error_code}",
        )

    def cancel_children(self, tx: SqlTx, fx: Effects, parent: Job, now: float) -> None:
        """Cancel a parent's live children: queued ones now, running ones at their next heartbeat."""
        for child in tx.children_of(parent.id, lock=True):
            if child.state == JobState.QUEUED:
                self.transitions.cancel(tx, fx, child, now)
            elif not child.state.terminal:
                tx.update_job(child.id, cancel_requested=True, updated_at=now)
                fx.jobs.add(child.id)

    def _next_stage(
        self, tx: SqlTx, fx: Effects, parent_id: str, stage: int, before: Sequence[Job], children: list[Child]
    ) -> None:
        parent = self._locked_parent(tx, parent_id, stage)
        if parent is None:
            return
        now = self.clock()
        jobs = child_jobs(parent, children, stage + 1, now)
        insert_children(tx, fx, jobs, now)
        done = sum(c.state == JobState.SUCCEEDED for c in before)
        total = max(self.plans[parent.kind].expected(parent), len(before) + len(jobs))
        tx.update_job(parent_id, stage=stage + 1, progress_step=done, progress_total=total, updated_at=now)
        tx.insert_events(
            [
                (
                    parent_id,
                    parent.tenant,
                    EventType.PROGRESS,
                    {"step": done, "total": total, "stage": stage + 1},
                    now,
                )
            ]
        )
        fx.jobs.add(parent_id)
        log.info("fanout.stage parent_id=%s stage=%d children=%d", parent_id, stage + 1, len(jobs))

    def _resume(
        self, tx: SqlTx, fx: Effects, parent_id: str, stage: int, children: Sequence[Job], step: Resume
    ) -> None:
        """Queue the parent itself with its new spec (its children's cost and time carried over)."""
        parent = self._locked_parent(tx, parent_id, stage)
        if parent is None:
            return
        now = self.clock()
        tx.update_job(
            parent_id,
            state=JobState.QUEUED,
            spec=step.spec,
            stage=stage + 1,
            queued_at=now,
            updated_at=now,
            wait_reason=None,
            progress_step=0,
            progress_total=0,
            cost_usd=sum(c.cost_usd for c in children),
            engine_seconds=sum(c.engine_seconds for c in children),
        )
        data = {"state": "queued", "after_children": len(children), **step.info}
        tx.insert_events([(parent_id, parent.tenant, EventType.QUEUED, data, now)])
        fx.jobs.add(parent_id)
        fx.work += 1
        log.info("fanout.resumed parent_id=%s children=%d", parent_id, len(children))

    def _succeed(
        self,
        tx: SqlTx,
        fx: Effects,
        parent_id: str,
        stage: int,
        children: Sequence[Job],
        outputs: list[Output],
        final: Final,
    ) -> None:
        parent = self._locked_parent(tx, parent_id, stage)
        if parent is None:
            return
        now = self.clock()
        cost = sum(c.cost_usd for c in children)
        seconds = sum(c.engine_seconds for c in children)
        tx.insert_outputs_of([(o, parent.tenant) for o in outputs])
        tx.update_job(
            parent_id,
            state=JobState.SUCCEEDED,
            finished_at=now,
            updated_at=now,
            progress_step=len(children),
            progress_total=len(children),
            cost_usd=cost,
            engine_seconds=seconds,
            result={"info": final.info, "children": len(children)},
        )
        parent.state, parent.finished_at, parent.cost_usd = JobState.SUCCEEDED, now, cost
        done = {"state": "succeeded", "images": len(outputs), "cost_usd": cost}
        tx.insert_events(
            [
                (parent_id, parent.tenant, EventType.OUTPUT, {"index": o.index, "seed": o.seed}, now)
                for o in outputs
            ]
            + [(parent_id, parent.tenant, EventType.FINISHED, done, now)]
        )
        self.transitions.queue_webhooks(tx, fx, [parent], "job.finished", now)
        fx.jobs.add(parent_id)
        fx.count("completed")
        fx.observe("job_latency", max(0.0, now - parent.created_at))
        log.info("fanout.succeeded parent_id=%s children=%d cost_usd=%.6f", parent_id, len(children), cost)


__all__ = [
    "CHILD_INDEX_LABEL",
    "Child",
    "FanOut",
    "Final",
    "Plan",
    "Resume",
    "child_index",
    "child_jobs",
    "insert_children",
    "waiting_for",
]
