"""The bench report, and how the orchestrator's own CPU time is measured.

* :class:`BenchReport` holds every number a run produces; :func:`build_report` computes it from the
  finished jobs as the public API returns them (:class:`JobRecord`); :func:`render_report` prints
  it as a rich table for humans and :meth:`BenchReport.to_json` as one JSON object for machines.
* The orchestrator's CPU seconds per job lifecycle (submit → claim → complete) is the number that
  says what one core can sustain whatever the load generator costs (a Python client on the same
  cores saturates first). When the bench starts the server itself (:class:`EmbeddedServer`, a
  subprocess), it reads the process's ``utime + stime`` from ``/proc/<pid>/stat``
  (:class:`ProcCpuMeter`); against ``--server URL`` it reads ``process_cpu_seconds_total`` from the
  server's ``/metrics`` (:class:`MetricsCpuMeter`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import aiohttp
from rich.console import Console
from rich.table import Table

# ===================================================================== records and statistics


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as the bench saw it at the end of the run (from ``GET /v1/jobs``)."""

    id: str
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    failures: int
    interruptions: int
    cost_usd: float
    engine_seconds: float
    images: int

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> JobRecord:
        """Build a record from a ``JobView`` JSON object."""
        return cls(
            id=str(view["id"]),
            state=str(view["state"]),
            created_at=float(view["created_at"]),
            started_at=_opt_float(view.get("started_at")),
            finished_at=_opt_float(view.get("finished_at")),
            failures=int(view.get("failures") or 0),
            interruptions=int(view.get("interruptions") or 0),
            cost_usd=float(view.get("cost_usd") or 0.0),
            engine_seconds=float(view.get("engine_seconds") or 0.0),
            images=len(view.get("outputs") or ()),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ascending ``sorted_values``, linear between ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Percentiles of a set of durations, in seconds."""

    count: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Distribution | None:
        """The distribution of ``values``, or None when there are none."""
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            mean=sum(ordered) / len(ordered),
            max=ordered[-1],
        )


@dataclass(frozen=True, slots=True)
class WorkerBusy:
    """How long one worker's engine was busy (measured by a simulated worker, or from the server's
    per-worker engine-seconds counter for real workers)."""

    name: str
    jobs: int
    busy_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerDuty:
    """One worker's engine duty cycle: busy seconds over the run's span."""

    name: str
    jobs: int
    busy_seconds: float
    duty_cycle: float


@dataclass(frozen=True, slots=True)
class DutySummary:
    """Duty cycles over the workers that ran jobs."""

    mean: float
    min: float
    max: float
    workers: list[WorkerDuty]


@dataclass(frozen=True, slots=True)
class ServerCpu:
    """The orchestrator's own CPU time over the measured window (first submit → last finish)."""

    source: str
    cpu_seconds: float
    wall_seconds: float
    lifecycles: int

    @property
    def ms_per_lifecycle(self) -> float | None:
        """Server CPU milliseconds per finished job lifecycle."""
        return 1000.0 * self.cpu_seconds / self.lifecycles if self.lifecycles else None

    @property
    def utilization(self) -> float:
        """CPU seconds per wall second (1.0 = one core fully busy)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def lifecycles_per_core_second(self) -> float | None:
        """What one core could sustain at this cost: 1 / CPU seconds per lifecycle."""
        return self.lifecycles / self.cpu_seconds if self.cpu_seconds > 0 else None


@dataclass(frozen=True, slots=True)
class BenchSetup:
    """What was run: the knobs of the bench, echoed in the report."""

    server: str
    embedded: bool
    engine: str
    simulated_workers: int
    claim_batch: int
    engine_seconds: float
    price_per_hour: float
    steps: int
    width: int
    height: int
    prompt: str
    variables: dict[str, list[str]]
    upload: str


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Everything one bench run measured. Times are seconds; money is US dollars."""

    setup: BenchSetup
    jobs: int
    succeeded: int
    failed: int
    canceled: int
    unfinished: int
    images: int
    elapsed_seconds: float
    client_seconds: float
    jobs_per_second: float
    queue_wait: Distribution | None
    latency: Distribution | None
    attempt_failures: int
    interruptions: int
    retries: int
    duty_cycle: DutySummary | None
    cost_usd: float
    cost_per_image: float | None
    images_per_dollar: float | None
    server_cpu: ServerCpu | None
    requests: dict[str, int] = field(default_factory=dict)
    http_errors: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every submitted job succeeded."""
        return self.jobs > 0 and self.succeeded == self.jobs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (derived CPU figures included)."""
        data = asdict(self)
        if self.server_cpu is not None:
            data["server_cpu"].update(
                ms_per_lifecycle=self.server_cpu.ms_per_lifecycle,
                utilization=self.server_cpu.utilization,
                lifecycles_per_core_second=self.server_cpu.lifecycles_per_core_second,
            )
        lifecycles = self.succeeded or 0
        sent = sum(v for k, v in self.requests.items() if not k.startswith("bench_"))
        data["requests_per_lifecycle"] = sent / lifecycles if lifecycles else None
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        """The report as one JSON object."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def build_report(
    setup: BenchSetup,
    records: list[JobRecord],
    *,
    submitted: int,
    client_seconds: float,
    busy: list[WorkerBusy],
    server_cpu: ServerCpu | None,
    requests: dict[str, int],
    errors: list[str],
    http_errors: dict[str, int] | None = None,
) -> BenchReport:
    """Compute the report from the jobs' final views and what the bench measured itself."""
    by_state: dict[str, int] = {}
    for r in records:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    done = [r for r in records if r.finished_at is not None]
    first = min((r.created_at for r in records), default=0.0)
    last = max((r.finished_at for r in done if r.finished_at is not None), default=first)
    elapsed = max(0.0, last - first)
    succeeded = by_state.get("succeeded", 0)
    ok = [r for r in records if r.state == "succeeded"]
    waits = [r.started_at - r.created_at for r in records if r.started_at is not None]
    latencies = [r.finished_at - r.created_at for r in done if r.finished_at is not None]
    images = sum(r.images for r in ok)
    cost = sum(r.cost_usd for r in records)
    cost_per_image = cost / images if images else None
    images_per_dollar = images / cost if cost > 0 else None
    attempt_failures = sum(r.failures for r in records)
    interruptions = sum(r.interruptions for r in records)
    duty: DutySummary | None = None
    active = [b for b in busy if b.jobs > 0 or b.busy_seconds > 0]
    if active and elapsed > 0:
        per_worker = [
            WorkerDuty(b.name, b.jobs, b.busy_seconds, min(1.0, b.busy_seconds / elapsed)) for b in active
        ]
        cycles = [w.duty_cycle for w in per_worker]
        duty = DutySummary(
            mean=sum(cycles) / len(cycles), min=min(cycles), max=max(cycles), workers=per_worker
        )
    finished = succeeded + by_state.get("failed", 0) + by_state.get("canceled", 0)
    return BenchReport(
        setup=setup,
        jobs=submitted,
        succeeded=succeeded,
        failed=by_state.get("failed", 0),
        canceled=by_state.get("canceled", 0),
        unfinished=submitted - finished,
        images=images,
        elapsed_seconds=elapsed,
        client_seconds=client_seconds,
        jobs_per_second=finished / elapsed if elapsed > 0 else 0.0,
        queue_wait=Distribution.of(waits),
        latency=Distribution.of(latencies),
        attempt_failures=attempt_failures,
        interruptions=interruptions,
        retries=attempt_failures + interruptions,
        duty_cycle=duty,
        cost_usd=cost,
        cost_per_image=cost_per_image,
        images_per_dollar=images_per_dollar,
        server_cpu=server_cpu,
        requests=dict(requests),
        http_errors=dict(http_errors or {}),
        errors=list(errors),
    )


# ===================================================================== rendering


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def _dist(d: Distribution | None) -> str:
    if d is None:
        return "–"
    return f"p50 {_ms(d.p50)} · p95 {_ms(d.p95)} · p99 {_ms(d.p99)} · max {_ms(d.max)}"


def render_report(report: BenchReport, console: Console) -> None:
    """Print the report as a table (for humans)."""
    s = report.setup
    table = Table(title="sdfleet bench", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value")
    where = f"{s.server} (embedded, started by the bench)" if s.embedded else s.server
    table.add_row("server", where)
    workers = (
        f"{s.simulated_workers} simulated (fake engine {s.engine_seconds:g} s/job, claim batch "
        f"{s.claim_batch}, {s.upload} uploads, ${s.price_per_hour:g}/h)"
        if s.engine == "fake"
        else "real workers attached to the server"
    )
    table.add_row("workers", workers)
    table.add_row("jobs", f"{s.steps} steps, {s.width}x{s.height}, prompt {s.prompt!r}")
    status = "[green]" if report.ok else "[red]"
    table.add_row(
        "outcome",
        f"{status}{report.succeeded}/{report.jobs} succeeded[/], {report.failed} failed, "
        f"{report.canceled} canceled, {report.unfinished} unfinished",
    )
    table.add_row(
        "throughput",
        f"[bold]{report.jobs_per_second:,.1f} jobs/s[/] over {report.elapsed_seconds:.2f} s "
        f"(first submit → last finish; bench wall {report.client_seconds:.2f} s)",
    )
    cpu = report.server_cpu
    if cpu is not None and cpu.ms_per_lifecycle is not None:
        per_core = cpu.lifecycles_per_core_second or 0.0
        table.add_row(
            "server CPU",
            f"[bold]{cpu.ms_per_lifecycle:.3f} ms per lifecycle[/] ({cpu.cpu_seconds:.2f} CPU s over "
            f"{cpu.wall_seconds:.2f} s, {cpu.utilization * 100:.0f}% of a core; ≈ {per_core:,.0f} "
            f"lifecycles/s per core; from {cpu.source})",
        )
    else:
        table.add_row("server CPU", "–")
    table.add_row("queue wait", _dist(report.queue_wait))
    table.add_row("end to end", _dist(report.latency))
    table.add_row(
        "retries",
        f"{report.retries} ({report.attempt_failures} failed attempts, {report.interruptions} interruptions)",
    )
    if report.duty_cycle is not None:
        d = report.duty_cycle
        table.add_row(
            "engine duty cycle",
            f"mean {d.mean * 100:.1f}% · min {d.min * 100:.1f}% · max {d.max * 100:.1f}% "
            f"over {len(d.workers)} workers",
        )
    else:
        table.add_row("engine duty cycle", "–")
    cpi = f"${report.cost_per_image:.8f}" if report.cost_per_image is not None else "–"
    ipd = f"{report.images_per_dollar:,.0f}" if report.images_per_dollar is not None else "– (no cost)"
    table.add_row(
        "cost", f"${report.cost_usd:.6f} for {report.images} images · {cpi} per image · {ipd} images per $"
    )
    if report.requests:
        lifecycles = report.succeeded or 1
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(report.requests.items()) if v)
        sent = sum(v for k, v in report.requests.items() if not k.startswith("bench_"))
        table.add_row("requests", f"{shown} ({sent / lifecycles:.2f} per lifecycle)")
    if report.http_errors:
        failed = ", ".join(f"{k}: {v:,}" for k, v in sorted(report.http_errors.items()))
        table.add_row("[red]failed requests[/]", f"{failed} (retried where safe)")
    grouped: dict[str, int] = {}
    for error in report.errors:  # "bench-sim-0007: heartbeat: …" → one row per distinct problem
        what = error.split(": ", 1)[1] if error.startswith("bench-sim-") and ": " in error else error
        grouped[what] = grouped.get(what, 0) + 1
    for what, count in list(grouped.items())[:10]:
        table.add_row("[red]error[/]", what if count == 1 else f"{what} (× {count})")
    console.print(table)
    if report.duty_cycle is not None and len(report.duty_cycle.workers) <= 16:
        per = Table(title="duty cycle per worker", title_justify="left")
        per.add_column("worker")
        per.add_column("jobs", justify="right")
        per.add_column("busy", justify="right")
        per.add_column("duty", justify="right")
        for w in report.duty_cycle.workers:
            per.add_row(w.name, str(w.jobs), f"{w.busy_seconds:.2f} s", f"{w.duty_cycle * 100:.1f}%")
        console.print(per)


# ===================================================================== CPU meters


class CpuMeter(Protocol):
    """Reads the orchestrator process's cumulative CPU seconds."""

    source: str

    async def read(self) -> float:
        """Cumulative user + system CPU seconds of the server process."""
        ...


def proc_cpu_seconds(pid: int) -> float:
    """``utime + stime`` of a process (all its threads) from ``/proc/<pid>/stat``, in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) is in parentheses and may contain spaces: split after the last ")"
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class ProcCpuMeter:
    """CPU time of a local process, from ``/proc`` (the embedded server)."""

    source = "/proc/<pid>/stat"

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.source = f"/proc/{pid}/stat"

    async def read(self) -> float:
        """Cumulative CPU seconds of the process."""
        return proc_cpu_seconds(self.pid)


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, by name."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            samples[name] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return samples


class MetricsCpuMeter:
    """CPU time of a remote orchestrator, from ``process_cpu_seconds_total`` on its ``/metrics``."""

    source = "/metrics process_cpu_seconds_total"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/metrics"
        self.headers = headers

    async def read(self) -> float:
        """Cumulative CPU seconds the server reports about itself."""
        async with self.session.get(self.url, headers=self.headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"GET /metrics answered {resp.status}: {text[:200]}")
        samples = parse_metrics(text)
        if "process_cpu_seconds_total" not in samples:
            raise RuntimeError("the server's /metrics has no process_cpu_seconds_total")
        return samples["process_cpu_seconds_total"]


# ===================================================================== the embedded server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(host: str, port: int, data_dir: Path, *, via_cli: bool = True) -> list[str]:
    """The command that runs an orchestrator (only, no workers) for the bench.

    ``via_cli`` runs ``python -m sdfleet serve``; otherwise uvicorn is started directly on
    ``create_app(Settings(...))``. Either way ``SDFLEET_*`` variables of the environment apply
    (e.g. ``SDFLEET_DATABASE_URL=postgresql://…`` benches PostgreSQL)."""
    if via_cli:
        return [
            sys.executable,
            "-m",
            "sdfleet",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ]
    code = (
        "import sys, uvicorn\n"
        "from sdfleet.api.app import create_app\n"
        "from sdfleet.config import Settings\n"
        "s = Settings(host=sys.argv[1], port=int(sys.argv[2]), data_dir=sys.argv[3], log_level='warning')\n"
        "uvicorn.run(create_app(s), host=s.host, port=s.port, log_level='warning', access_log=False)\n"
    )
    return [sys.executable, "-c", code, host, str(port), str(data_dir)]


class EmbeddedServer:
    """An orchestrator subprocess on a free loopback port with its own data directory (a temporary
    one, removed on :meth:`stop`, unless ``data_dir`` is given)."""

    def __init__(
        self, data_dir: Path | None = None, *, host: str = "127.0.0.1", via_cli: bool = True
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="sdfleet-bench-")) if data_dir is None else data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.url = f"http://{host}:{self.port}"
        self.command = server_command(host, self.port, self.data_dir, via_cli=via_cli)
        self.log_path = self.data_dir / "bench-server.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The server process id."""
        if self._process is None:
            raise RuntimeError("the embedded server is not running")
        return self._process.pid

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's output (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Spawn the server and wait until ``/ready`` answers."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(
                    f"the embedded server exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                async with session.get(f"{self.url}/ready", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"the embedded server was not ready after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and remove a temporary data directory.

        SIGINT asks uvicorn to shut down; it would then wait for long-poll claims still parked in
        the server, so a second SIGINT a moment later makes it stop waiting (SIGKILL if all else
        fails). Nothing of value is lost: the bench has read its results by then."""
        proc, self._process = self._process, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 0.5)
            except TimeoutError:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        self._log.close()
        if self._own_dir:
            await asyncio.to_thread(shutil.rmtree, self.data_dir, True)
