"""The load generator: submit N jobs from a prompt template, wait for all of them, measure.

* Prompts come from a template with ``{variables}`` (:class:`PromptTemplate`): every combination of
  the ``--var`` values, cycled until N prompts exist.
* Jobs go in with batched ``POST /v1/jobs`` (up to 1000 per request), labelled with a run id and
  carrying idempotency keys (a submit whose answer was lost is sent again safely).
* Waiting costs the server (almost) nothing: with simulated workers the bench knows which jobs its
  workers reported; with real workers it reads the completion counters on ``/metrics``. Either way
  it confirms with ``GET /v1/jobs?state=queued&state=running`` (which only gets cheaper as jobs
  finish) before it stops the clock, then reads every job once, in pages of 500.
* The server's CPU time is read right before the first submit and right after the last job is
  seen finished, so the report's CPU per lifecycle covers submit, claim, heartbeat and complete —
  and not the bench's final read-back.

:func:`run_bench` is the whole run; the ``sdfleet bench`` command is a thin shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import string
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from sdfleet.bench.report import (
    BenchReport,
    BenchSetup,
    CpuMeter,
    EmbeddedServer,
    JobRecord,
    MetricsCpuMeter,
    ProcCpuMeter,
    ServerCpu,
    WorkerBusy,
    build_report,
    parse_metrics,
)
from sdfleet.bench.sim import HttpClient, HttpError, SimConfig, SimFleet, UploadMode

EngineMode = Literal["fake", "attached"]
MAX_SUBMIT_BATCH = 1000
PAGE = 500
TERMINAL = ("succeeded", "failed", "canceled")
_FINISHED_COUNTERS = (
    "sdfleet_jobs_completed_total",
    "sdfleet_jobs_failed_total",
    "sdfleet_jobs_canceled_total",
)


# ===================================================================== prompts


def parse_var(spec: str) -> tuple[str, list[str]]:
    """``"color=red,green,blue"`` → ``("color", ["red", "green", "blue"])``."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--var must look like name=value1,value2 (got {spec!r})")
    items = [v.strip() for v in values.split(",")]
    if not any(items):
        raise ValueError(f"--var {name} has no values")
    return name, items


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A prompt with ``{name}`` placeholders and the values each may take (``{{``/``}}`` are literal
    braces). Prompts walk through every combination of the values, then start over."""

    template: str
    variables: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, template: str, var_specs: Sequence[str]) -> PromptTemplate:
        """Build a template from ``--prompt`` and ``--var`` options, checking they match."""
        variables: dict[str, list[str]] = {}
        for spec in var_specs:
            name, values = parse_var(spec)
            variables.setdefault(name, []).extend(values)
        fields = cls.fields_of(template)
        missing = [f for f in fields if f not in variables]
        if missing:
            raise ValueError(f"the prompt uses {{{missing[0]}}} but no --var {missing[0]}=… was given")
        unused = [v for v in variables if v not in fields]
        if unused:
            raise ValueError(f"--var {unused[0]} is not used in the prompt")
        return cls(template, variables)

    @staticmethod
    def fields_of(template: str) -> list[str]:
        """The placeholder names of a template, in order of first use."""
        names: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"bad prompt template: {exc}") from exc
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(f"placeholders must be plain {{names}}, got {{{name}}}")
            if name not in names:
                names.append(name)
        return names

    @property
    def combinations(self) -> int:
        """How many distinct prompts the template makes."""
        count = 1
        for values in self.variables.values():
            count *= len(values)
        return count

    def prompts(self) -> Iterator[str]:
        """An endless stream of prompts: every combination in turn, over and over."""
        names = list(self.variables)
        combos = list(itertools.product(*(self.variables[n] for n in names)))
        for combo in itertools.cycle(combos):
            yield self.template.format(**dict(zip(names, combo, strict=True)))

    def take(self, n: int) -> list[str]:
        """The first ``n`` prompts."""
        return list(itertools.islice(self.prompts(), n))


# ===================================================================== configuration


def parse_size(size: str) -> tuple[int, int]:
    """``"512x768"`` → ``(512, 768)``; ``"512"`` → ``(512, 512)``."""
    w, sep, h = size.lower().partition("x")
    try:
        width = int(w)
        height = int(h) if sep else width
    except ValueError:
        raise ValueError(f"--size must look like 512x512 (got {size!r})") from None
    if width <= 0 or height <= 0:
        raise ValueError("--size must be positive")
    return width, height


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One bench run. ``server=None`` starts an embedded orchestrator (a subprocess)."""

    jobs: int = 1000
    prompt: PromptTemplate = field(default_factory=lambda: PromptTemplate("a photo of a cat"))
    server: str | None = None
    engine: EngineMode = "fake"
    simulate_workers: int = 0
    claim_batch: int = 8
    engine_seconds: float = 0.0
    price_per_hour: float = 1.0
    steps: int = 20
    width: int = 512
    height: int = 512
    token: str = ""
    worker_token: str | None = None
    submit_batch: int = MAX_SUBMIT_BATCH
    long_poll: float = 10.0
    upload: UploadMode = "inline"
    timeout: float = 600.0
    poll_interval: float = 0.5
    data_dir: Path | None = None
    via_cli: bool = True

    def check(self) -> None:
        """Refuse combinations that cannot work, with a message that says why."""
        if self.jobs < 1:
            raise ValueError("--jobs must be at least 1")
        if not 1 <= self.submit_batch <= MAX_SUBMIT_BATCH:
            raise ValueError(f"--submit-batch must be 1..{MAX_SUBMIT_BATCH}")
        if not 1 <= self.claim_batch <= 256:
            raise ValueError("--claim-batch must be 1..256")
        if self.engine_seconds < 0 or self.price_per_hour < 0:
            raise ValueError("--engine-seconds and --price-per-hour must not be negative")
        if self.engine == "fake" and self.simulate_workers < 1:
            raise ValueError("--engine fake needs --simulate-workers N (N ≥ 1)")
        if self.engine == "attached" and self.simulate_workers:
            raise ValueError("--engine attached uses the server's own workers: drop --simulate-workers")
        if self.engine == "attached" and self.server is None:
            raise ValueError(
                "the embedded server runs no workers: give --simulate-workers N, or --server URL of a "
                "server with real workers attached"
            )


class ProgressSink(Protocol):
    """Receives progress while the bench runs (the CLI draws a progress bar)."""

    def update(self, submitted: int, finished: int, total: int) -> None:
        """``submitted`` and ``finished`` of ``total`` jobs so far."""


def job_bodies(config: BenchConfig, run_id: str) -> list[dict[str, Any]]:
    """The ``JobCreate`` bodies of the run: seed = the job's index (so images differ), and an
    idempotency key, so a submit whose answer was lost can be sent again without doubling jobs."""
    return [
        {
            "params": {
                "prompt": prompt,
                "steps": config.steps,
                "width": config.width,
                "height": config.height,
                "seed": i,
            },
            "labels": {"bench": run_id},
            "idempotency_key": f"bench-{run_id}-{i}",
        }
        for i, prompt in enumerate(config.prompt.take(config.jobs))
    ]


# ===================================================================== the run


@dataclass(slots=True)
class _Run:
    """The state of one run: its jobs' ids and how to ask the server about them."""

    config: BenchConfig
    api: HttpClient
    fleet: SimFleet | None
    run_id: str
    ids: list[str] = field(default_factory=list)
    id_set: set[str] = field(default_factory=set)
    submit_error: str | None = None

    @property
    def min_id(self) -> str:
        return min(self.ids) if self.ids else ""

    async def submit(self, bodies: list[dict[str, Any]], on_batch: Callable[[], None]) -> None:
        for i in range(0, len(bodies), self.config.submit_batch):
            chunk = bodies[i : i + self.config.submit_batch]
            try:
                answer = await self.api.call(
                    "POST", "/v1/jobs", {"jobs": chunk}, name="submit", timeout=120.0, retry_for=120.0
                )
            except HttpError as exc:
                self.submit_error = f"submit: {exc}"
                return
            new = [str(j["id"]) for j in answer["jobs"]]
            self.ids.extend(new)
            self.id_set.update(new)
            on_batch()

    async def pending(self) -> int:
        """How many of this run's jobs are still queued or running (server's view)."""
        count = 0
        cursor: str | None = None
        floor = self.min_id
        while True:
            params = [("state", "queued"), ("state", "running"), ("limit", str(PAGE))]
            if cursor:
                params.append(("cursor", cursor))
            page = await self.api.call("GET", "/v1/jobs", params=params, name="bench_poll")
            jobs = page.get("jobs") or []
            count += sum(1 for j in jobs if j["id"] in self.id_set)
            cursor = page.get("next_cursor")
            if not cursor or not jobs or str(jobs[-1]["id"]) < floor:
                return count

    async def finished_counter(self) -> float:
        """Jobs the server has finished (succeeded, failed, canceled), from ``/metrics``."""
        async with self.api.session.get(self.api.url("/metrics"), headers=self.api.auth) as resp:
            text = await resp.text()
        self.api.counts["bench_metrics"] += 1
        samples = parse_metrics(text)
        return sum(samples.get(name, 0.0) for name in _FINISHED_COUNTERS)

    async def collect(self) -> list[JobRecord]:
        """Every job of this run, as the API shows it now (newest first, in pages)."""
        found: dict[str, JobRecord] = {}
        cursor: str | None = None
        floor = self.min_id
        while len(found) < len(self.id_set):
            params = [("limit", str(PAGE))]
            if cursor:
                params.append(("cursor", cursor))
            page = await self.api.call("GET", "/v1/jobs", params=params, name="bench_collect")
            jobs = page.get("jobs") or []
            for view in jobs:
                if view["id"] in self.id_set:
                    found[str(view["id"])] = JobRecord.from_view(view)
            cursor = page.get("next_cursor")
            if not cursor or not jobs or str(jobs[-1]["id"]) < floor:
                break
        for job_id in self.id_set - found.keys():  # not listed (should not happen): ask one by one
            view = await self.api.call("GET", f"/v1/jobs/{job_id}", name="bench_collect")
            found[job_id] = JobRecord.from_view(view)
        return [found[i] for i in self.ids]

    async def admin_workers(self) -> dict[str, dict[str, Any]] | None:
        """Per-worker counters from the admin API (None when this key may not read them)."""
        try:
            answer = await self.api.call("GET", "/v1/admin/workers", name="bench_admin", retry_for=5.0)
        except HttpError:
            return None
        return {str(w["id"]): w for w in answer.get("workers") or []}


async def _wait_done(
    run: _Run,
    submitter: asyncio.Task[None],
    progress: ProgressSink | None,
    counter_base: float | None,
) -> bool:
    """Wait until every submitted job is finished; True when they all are, False on timeout."""
    cfg = run.config
    deadline = time.monotonic() + cfg.timeout
    last_progress = -1
    last_change = time.monotonic()
    next_check = 0.0
    while True:
        submitting = not submitter.done()
        if run.fleet is not None:
            finished = len(run.id_set & run.fleet.finished) if run.ids else 0
        elif counter_base is not None:
            finished = min(len(run.ids), int(await run.finished_counter() - counter_base))
        else:
            finished = 0
        if progress is not None:
            progress.update(len(run.ids), finished, cfg.jobs)
        now = time.monotonic()
        if finished != last_progress:
            last_progress, last_change = finished, now
        if not submitting and run.ids:
            # confirm with the server when our own count says done, when it stopped moving (jobs
            # that failed or expired on the server's side), or now and then without a counter
            stalled = now - last_change > 2.0
            if (finished >= len(run.ids) or stalled or (run.fleet is None and counter_base is None)) and (
                now >= next_check
            ):
                if await run.pending() == 0:
                    if progress is not None:
                        progress.update(len(run.ids), len(run.ids), cfg.jobs)
                    return True
                next_check = now + (2.0 if stalled else cfg.poll_interval)
        if not submitting and not run.ids:
            return True
        if now > deadline:
            return False
        await asyncio.sleep(0.05 if run.fleet is not None else cfg.poll_interval)


async def run_bench(config: BenchConfig, progress: ProgressSink | None = None) -> BenchReport:
    """Run one bench: (start a server,) start simulated workers, submit, wait, measure, report."""
    config.check()
    run_id = uuid.uuid4().hex[:12]
    bodies = job_bodies(config, run_id)
    # idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under us
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=3.0)
    server: EmbeddedServer | None = None
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            if config.server is None:
                server = EmbeddedServer(config.data_dir, via_cli=config.via_cli)
                await server.start(session)
                base_url = server.url
                meter: CpuMeter = ProcCpuMeter(server.pid)
            else:
                base_url = config.server.rstrip("/")
                meter = MetricsCpuMeter(
                    session, base_url, {"authorization": f"Bearer {config.token}"} if config.token else {}
                )
            api = HttpClient(session, base_url, config.token)
            fleet: SimFleet | None = None
            if config.engine == "fake":
                worker_http = HttpClient(session, base_url, config.worker_token or config.token)
                fleet = SimFleet(
                    worker_http,
                    SimConfig(
                        workers=config.simulate_workers,
                        claim_batch=config.claim_batch,
                        engine_seconds=config.engine_seconds,
                        price_per_hour=config.price_per_hour,
                        long_poll=config.long_poll,
                        upload=config.upload,
                    ),
                )
            run = _Run(config, api, fleet, run_id)
            return await _measure(run, bodies, meter, base_url, server is not None, progress)
        finally:
            if server is not None:
                await server.stop()


async def _measure(
    run: _Run,
    bodies: list[dict[str, Any]],
    meter: CpuMeter,
    base_url: str,
    embedded: bool,
    progress: ProgressSink | None,
) -> BenchReport:
    cfg = run.config
    fleet = run.fleet
    admin_before: dict[str, dict[str, Any]] | None = None
    counter_base: float | None = None
    try:
        if fleet is not None:
            await fleet.start()
            await asyncio.sleep(0.3)  # let every worker's first long poll reach the server
        else:
            admin_before = await run.admin_workers()
            try:
                counter_base = await run.finished_counter()
            except (aiohttp.ClientError, ValueError):
                counter_base = None
        cpu_before = await meter.read()
        started = time.monotonic()
        submitter = asyncio.create_task(
            run.submit(bodies, lambda: progress.update(len(run.ids), 0, cfg.jobs) if progress else None)
        )
        all_done = await _wait_done(run, submitter, progress, counter_base)
        cpu_after = await meter.read()
        client_seconds = time.monotonic() - started
        if not submitter.done():
            submitter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await submitter
    finally:
        if fleet is not None:
            await fleet.stop()
    errors: list[str] = []
    if run.submit_error:
        errors.append(run.submit_error)
    if not all_done:
        errors.append(f"timed out after {cfg.timeout:.0f} s with jobs still unfinished")
    if fleet is not None:
        errors.extend(fleet.errors)
    records = await run.collect() if run.ids else []
    busy: list[WorkerBusy] = []
    requests: dict[str, int] = dict(run.api.counts)
    http_errors: dict[str, int] = dict(run.api.failures)
    if fleet is not None:
        busy = [WorkerBusy(s.name, s.jobs, s.busy_seconds) for s in fleet.stats()]
        for name, count in fleet.http.counts.items():
            requests[name] = requests.get(name, 0) + count
        for name, count in fleet.http.failures.items():
            http_errors[name] = http_errors.get(name, 0) + count
    elif admin_before is not None:
        admin_after = await run.admin_workers() or {}
        for wid, w in admin_after.items():
            before = admin_before.get(wid, {})
            jobs = int(w.get("jobs_done") or 0) - int(before.get("jobs_done") or 0)
            secs = float(w.get("engine_seconds") or 0.0) - float(before.get("engine_seconds") or 0.0)
            if jobs > 0 or secs > 0:
                busy.append(WorkerBusy(str(w.get("name") or wid), jobs, secs))
    finished = sum(1 for r in records if r.state in TERMINAL)
    setup = BenchSetup(
        server=base_url,
        embedded=embedded,
        engine=cfg.engine,
        simulated_workers=cfg.simulate_workers,
        claim_batch=cfg.claim_batch,
        engine_seconds=cfg.engine_seconds,
        price_per_hour=cfg.price_per_hour,
        steps=cfg.steps,
        width=cfg.width,
        height=cfg.height,
        prompt=cfg.prompt.template,
        variables=cfg.prompt.variables,
        upload=cfg.upload,
    )
    return build_report(
        setup,
        records,
        submitted=cfg.jobs,
        client_seconds=client_seconds,
        busy=busy,
        server_cpu=ServerCpu(
            source=meter.source,
            cpu_seconds=max(0.0, cpu_after - cpu_before),
            wall_seconds=client_seconds,
            lifecycles=finished,
        ),
        requests=requests,
        errors=errors,
        http_errors=http_errors,
    )
