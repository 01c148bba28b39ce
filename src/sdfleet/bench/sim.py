"""Simulated workers for fleet-scale benches on one machine, and the bench's lean HTTP client.

``--simulate-workers N`` runs N :class:`SimulatedWorker` s as asyncio tasks in the bench process.
Each speaks the real worker protocol over HTTP (aiohttp, one shared keep-alive pool): it registers
with a price per hour, long-polls ``claim`` for up to ``claim_batch`` jobs, "generates" each job by
sleeping a fake engine time, uploads a tiny PNG (inline ``data_b64`` when the blob store is the
orchestrator's local one, else ``PUT`` to the upload URL), and reports results with batched
``complete`` calls; heartbeats run on their own schedule. Like a real pipelined worker it claims
the next jobs while the current ones "generate" and completes while the next ones run, so the fake
engine is idle only when the orchestrator is slow to hand out work.

The engine time it reports (and is billed for) is the nominal ``engine_seconds`` per job: that is
what the simulated GPU spent; the event loop's own lag is an artefact of the simulation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

log = logging.getLogger("sdfleet.bench")

UploadMode = Literal["inline", "put"]
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_REFUSED_STATUS = frozenset({429, 503})
MAX_COMPLETE_BATCH = 256


# ===================================================================== HTTP


class HttpError(Exception):
    """The server answered a request with an error status (after any retries)."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"HTTP {status}{f' {code}' if code else ''}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _error_of(status: int, body: bytes) -> HttpError:
    code: str | None = None
    message = body[:300].decode(errors="replace")
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code")) if err.get("code") else None
            message = str(err.get("message") or message)
    except ValueError:
        pass
    return HttpError(status, code, message)


class HttpClient:
    """JSON over one shared aiohttp session, with retries on refusals and dropped connections.

    ``retry_ambiguous`` says whether a request may be re-sent after a failure that leaves unclear
    whether the server acted on it (a dropped connection, a 5xx): fine for idempotent calls
    (claim, complete, heartbeat, reads), not for job submission. Every request is counted by
    ``name`` in :attr:`counts`, and every failed attempt (retried or not) in :attr:`failures` as
    ``"<name> <status>"`` (status 0: no HTTP answer)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str = "") -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"content-type": "application/json"}
        self.auth = {"authorization": f"Bearer {token}"} if token else {}
        self.headers.update(self.auth)
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def url(self, path: str) -> str:
        """An absolute URL for a path on the server (absolute URLs pass through)."""
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        name: str,
        params: Sequence[tuple[str, str]] | None = None,
        timeout: float = 60.0,
        retry_for: float = 30.0,
        retry_ambiguous: bool = True,
    ) -> Any:
        """Send one request and return the decoded JSON answer; raise :class:`HttpError` on a 4xx,
        or on a 5xx / connection error that outlasts ``retry_for`` seconds."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            self.counts[name] += 1
            try:
                async with self.session.request(
                    method,
                    self.url(path),
                    data=data,
                    params=params,
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return json.loads(raw) if raw else None
                    error = _error_of(resp.status, raw)
                    retry = resp.status in (_RETRY_STATUS if retry_ambiguous else _REFUSED_STATUS)
            except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
                error = HttpError(0, "unreachable", str(exc))
                retry = True
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = HttpError(0, "connection", f"{type(exc).__name__}: {exc}")
                retry = retry_ambiguous
            self.failures[f"{name} {error.status}"] += 1
            if not retry or time.monotonic() >= deadline:
                raise error
            attempt += 1
            await asyncio.sleep(min(1.0, 0.02 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0))

    async def put_bytes(self, url: str, data: bytes, content_type: str, *, retry_for: float = 30.0) -> None:
        """PUT bytes to an upload URL: on the orchestrator (with the token) or presigned elsewhere."""
        target = self.url(url)
        headers = {"content-type": content_type}
        if target.startswith(self.base_url + "/"):
            headers.update(self.auth)
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            self.counts["upload"] += 1
            try:
                async with self.session.put(target, data=data, headers=headers) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return
                    error = _error_of(resp.status, raw)
                    retry = resp.status in _RETRY_STATUS
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = HttpError(0, "connection", f"{type(exc).__name__}: {exc}")
                retry = True
            self.failures[f"upload {error.status}"] += 1
            if not retry or time.monotonic() >= deadline:
                raise error
            attempt += 1
            await asyncio.sleep(min(1.0, 0.02 * 2 ** min(attempt, 10)))


# ===================================================================== the fake output


def tiny_png() -> bytes:
    """A valid 1×1 grey PNG (67 bytes), built without an imaging library."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1×1, 8-bit greyscale
    pixels = zlib.compress(b"\x00\x80")  # filter byte 0, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PNG = tiny_png()
PNG_B64 = base64.b64encode(PNG).decode()
PNG_SHA256 = hashlib.sha256(PNG).hexdigest()


# ===================================================================== workers


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated workers behave."""

    workers: int
    claim_batch: int = 8
    engine_seconds: float = 0.0
    price_per_hour: float = 0.0
    long_poll: float = 10.0
    upload: UploadMode = "inline"
    name_prefix: str = "bench-sim"


@dataclass(slots=True)
class HeldJob:
    """A job a simulated worker holds: claimed, maybe running, not yet reported."""

    job_id: str
    epoch: int
    uploads: list[dict[str, Any]]
    seed: int | None
    steps: int
    started_at: float | None = None
    canceled: bool = False


@dataclass(slots=True)
class WorkerStats:
    """What one simulated worker did."""

    name: str
    worker_id: str = ""
    jobs: int = 0
    busy_seconds: float = 0.0
    claims: int = 0
    empty_claims: int = 0
    jobs_claimed: int = 0
    completes: int = 0
    heartbeats: int = 0
    stale: int = 0
    duplicate: int = 0
    lost: int = 0
    canceled: int = 0
    errors: int = 0


class SimulatedWorker:
    """One simulated GPU worker: a claim loop, a fake engine loop, a completion loop and a heartbeat
    loop, all speaking the real worker protocol."""

    def __init__(self, fleet: SimFleet, index: int) -> None:
        self.fleet = fleet
        self.http = fleet.http
        self.cfg = fleet.config
        self.stats = WorkerStats(name=f"{self.cfg.name_prefix}-{index:04d}")
        self.heartbeat_seconds = 5.0
        self._held: dict[str, HeldJob] = {}
        self._ready: asyncio.Queue[HeldJob] = asyncio.Queue()
        self._done: asyncio.Queue[HeldJob] = asyncio.Queue()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def register(self) -> None:
        """Announce this worker (fake engine, price per hour)."""
        answer = await self.http.call(
            "POST",
            "/v1/worker/register",
            {
                "name": self.stats.name,
                "gpu_name": "simulated (sdfleet bench, fake engine)",
                "price_per_hour": self.cfg.price_per_hour,
                "engine": "fake",
                "version": "bench",
                "info": {"simulated": True, "engine_seconds": self.cfg.engine_seconds},
            },
            name="register",
        )
        self.stats.worker_id = str(answer["worker_id"])
        self.heartbeat_seconds = float(answer.get("heartbeat_seconds") or 5.0)

    def start(self) -> None:
        """Start the worker's loops."""
        for loop in (self._claim_loop, self._engine_loop, self._complete_loop, self._heartbeat_loop):
            self._tasks.append(
                asyncio.create_task(self._guard(loop), name=f"{self.stats.name}.{loop.__name__}")
            )

    async def _guard(self, loop: Any) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.errors += 1
            self.fleet.note_error(f"{self.stats.name}: {loop.__name__} crashed: {exc}")
            log.exception("bench.sim.crashed worker=%s loop=%s", self.stats.name, loop.__name__)

    async def stop(self) -> None:
        """Stop the loops, give back jobs not reported yet, and tell the server this worker is gone."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if not self.stats.worker_id:
            return
        for job in list(self._held.values()):
            with contextlib.suppress(HttpError):
                await self.http.call(
                    "POST",
                    "/v1/worker/release",
                    {
                        "worker_id": self.stats.worker_id,
                        "job_id": job.job_id,
                        "epoch": job.epoch,
                        "reason": "bench finished",
                    },
                    name="release",
                    retry_for=5.0,
                )
        with contextlib.suppress(HttpError):
            await self.http.call(
                "POST", "/v1/worker/stop", {"worker_id": self.stats.worker_id}, name="stop", retry_for=5.0
            )

    # ------------------------------------------------------------------ loops
    async def _claim_loop(self) -> None:
        while True:
            # prefetch one batch ahead, no more: at most two batches held (one generating or being
            # reported, one waiting), so held jobs never sit out their lease behind slow reports
            room = min(self.cfg.claim_batch - self._ready.qsize(), 2 * self.cfg.claim_batch - len(self._held))
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                answer = await self.http.call(
                    "POST",
                    "/v1/worker/claim",
                    {
                        "worker_id": self.stats.worker_id,
                        "max_jobs": room,
                        "wait": self.cfg.long_poll,
                        "loaded_models": ["fake"],  # a warm set, as real workers report: scored claims
                    },
                    name="claim",
                    timeout=self.cfg.long_poll + 30.0,
                    retry_for=120.0,
                )
            except HttpError as exc:
                self.stats.errors += 1
                self.fleet.note_error(f"{self.stats.name}: claim: {exc}")
                await asyncio.sleep(1.0)
                continue
            self.stats.claims += 1
            jobs = answer.get("jobs") or []
            if not jobs:
                self.stats.empty_claims += 1
                if answer.get("worker_state") == "quarantined":
                    await asyncio.sleep(1.0)
                continue
            self.stats.jobs_claimed += len(jobs)
            for j in jobs:
                params = j.get("params") or {}
                seed = params.get("seed")
                held = HeldJob(
                    job_id=str(j["job_id"]),
                    epoch=int(j["epoch"]),
                    uploads=list(j.get("uploads") or []),
                    seed=int(seed) if isinstance(seed, int) and seed >= 0 else None,
                    steps=int(params.get("steps") or 1),
                )
                self._held[held.job_id] = held
                self._ready.put_nowait(held)

    async def _engine_loop(self) -> None:
        seconds = self.cfg.engine_seconds
        while True:
            job = await self._ready.get()
            self._room.set()
            if self._held.get(job.job_id) is not job:
                continue  # lost or canceled while it waited
            job.started_at = time.monotonic()
            if seconds > 0:
                # without engine time there is no await here on purpose: a whole claim batch then
                # "generates" at once and goes back in one batched complete
                await asyncio.sleep(seconds)
            self.stats.busy_seconds += seconds
            self._done.put_nowait(job)

    def _output(self, job: HeldJob, target: Mapping[str, Any], inline: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "index": int(target["index"]),
            "key": str(target["key"]),
            "content_type": "image/png",
            "size": len(PNG),
            "sha256": PNG_SHA256,
            "seed": job.seed,
            "infotext": None,
        }
        if inline:
            item["data_b64"] = PNG_B64
        return item

    async def _outputs(self, job: HeldJob) -> list[dict[str, Any]]:
        outputs = []
        for target in job.uploads:
            url = str(target["url"])
            local = not url.startswith(("http://", "https://"))
            inline = self.cfg.upload == "inline" and local
            if not inline:
                await self.http.put_bytes(url, PNG, "image/png")
            outputs.append(self._output(job, target, inline))
        return outputs

    async def _complete_loop(self) -> None:
        while True:
            batch = [await self._done.get()]
            while not self._done.empty() and len(batch) < MAX_COMPLETE_BATCH:
                batch.append(self._done.get_nowait())
            reports: list[HeldJob] = []
            items: list[dict[str, Any]] = []
            for job in batch:
                if self._held.get(job.job_id) is not job:
                    continue
                if job.canceled:
                    await self._report_canceled(job)
                    continue
                reports.append(job)
            if self.cfg.upload == "put":
                outputs = await asyncio.gather(*(self._outputs(j) for j in reports))
            else:
                outputs = [await self._outputs(j) for j in reports]
            for job, outs in zip(reports, outputs, strict=True):
                items.append(
                    {
                        "job_id": job.job_id,
                        "epoch": job.epoch,
                        "outputs": outs,
                        "engine_seconds": self.cfg.engine_seconds,
                        "timings": {"engine": self.cfg.engine_seconds},
                    }
                )
            if not items:
                continue
            try:
                answer = await self.http.call(
                    "POST",
                    "/v1/worker/complete",
                    {"worker_id": self.stats.worker_id, "results": items},
                    name="complete",
                    retry_for=300.0,
                )
            except HttpError as exc:
                self.stats.errors += 1
                self.fleet.note_error(f"{self.stats.name}: complete: {exc}")
                for job in reports:
                    self._held.pop(job.job_id, None)
                self._room.set()
                continue
            self.stats.completes += 1
            self._room.set()
            for result in answer.get("results") or []:
                job_id = str(result.get("job_id"))
                status = result.get("status")
                self._held.pop(job_id, None)
                if status == "accepted":
                    self.stats.jobs += 1
                    self.fleet.finished.add(job_id)
                elif status == "duplicate":
                    self.stats.duplicate += 1
                    self.fleet.finished.add(job_id)
                else:
                    self.stats.stale += 1

    async def _report_canceled(self, job: HeldJob) -> None:
        self._held.pop(job.job_id, None)
        self._room.set()
        self.stats.canceled += 1
        with contextlib.suppress(HttpError):
            await self.http.call(
                "POST",
                "/v1/worker/fail",
                {
                    "worker_id": self.stats.worker_id,
                    "job_id": job.job_id,
                    "epoch": job.epoch,
                    "code": "canceled",
                    "message": "canceled by the client",
                    "retryable": False,
                },
                name="fail",
            )
        self.fleet.finished.add(job.job_id)

    async def _heartbeat_loop(self) -> None:
        await asyncio.sleep(random.uniform(0.2, 1.0) * self.heartbeat_seconds)
        while True:
            if self._held:
                now = time.monotonic()
                beats = []
                for job in list(self._held.values()):
                    step = 0
                    if job.started_at is not None and self.cfg.engine_seconds > 0:
                        fraction = min(1.0, (now - job.started_at) / self.cfg.engine_seconds)
                        step = int(fraction * job.steps)
                    beats.append({"job_id": job.job_id, "epoch": job.epoch, "step": step, "total": job.steps})
                try:
                    answer = await self.http.call(
                        "POST",
                        "/v1/worker/heartbeat",
                        {"worker_id": self.stats.worker_id, "jobs": beats[:256]},
                        name="heartbeat",
                        retry_for=10.0,
                    )
                    self.stats.heartbeats += 1
                    for a in answer.get("jobs") or []:
                        held = self._held.get(str(a.get("job_id")))
                        if held is None:
                            continue
                        if a.get("action") == "lost":
                            self.stats.lost += 1
                            self._held.pop(held.job_id, None)
                            self._room.set()
                        elif a.get("action") == "cancel":
                            held.canceled = True
                            if held.started_at is None:
                                await self._report_canceled(held)
                except HttpError as exc:
                    self.stats.errors += 1
                    self.fleet.note_error(f"{self.stats.name}: heartbeat: {exc}")
            await asyncio.sleep(self.heartbeat_seconds)


@dataclass(slots=True)
class SimFleet:
    """N simulated workers sharing one HTTP client.

    :attr:`finished` collects the ids of every job a simulated worker reported (accepted, a
    duplicate of an accepted result, or canceled); the bench watches it to know when its jobs are
    done without polling the server."""

    http: HttpClient
    config: SimConfig
    workers: list[SimulatedWorker] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        """Keep the first errors for the report."""
        if len(self.errors) < 50:
            self.errors.append(message)

    async def start(self) -> None:
        """Register every worker (concurrently) and start their loops."""
        self.workers = [SimulatedWorker(self, i) for i in range(self.config.workers)]
        for i in range(0, len(self.workers), 64):
            await asyncio.gather(*(w.register() for w in self.workers[i : i + 64]))
        for w in self.workers:
            w.start()

    async def stop(self) -> None:
        """Stop every worker."""
        await asyncio.gather(*(w.stop() for w in self.workers))

    def stats(self) -> list[WorkerStats]:
        """Per-worker statistics."""
        return [w.stats for w in self.workers]
