"""Worker duty cycle: how much of the time the engine is busy while work is queued.

Runs a real orchestrator in this process (uvicorn on 127.0.0.1, temporary SQLite database and
local blob directory, in its own thread) and one :class:`sdfleet.worker.runner.Worker` with the
FakeEngine test double. Every HTTP request the worker makes is delayed by ``--latency`` seconds (an
httpx transport wrapper: a simulated network round trip) and, with ``--upload-mbps``, by its body
size over that bandwidth; every output is padded to about ``--output-mb`` MB so the upload takes
real time. N jobs are queued up front; the duty cycle is engine busy seconds over wall seconds from
the worker's start to its last completion. Pipelined and sequential (claim → generate → upload →
complete) workers run on fresh orchestrators, one after the other.

    python benchmarks/worker_duty_cycle.py --jobs 40 --steps 20 --step-seconds 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from sdfleet.config import Settings, WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.testing.server import ServerThread
from sdfleet.worker.client import WorkerClient
from sdfleet.worker.runner import Worker


class LatencyTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: each request waits ``latency`` seconds (a round trip) plus its body
    size over ``bytes_per_second`` (when set) before it is sent."""

    def __init__(
        self,
        latency: float,
        bytes_per_second: float | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.latency = latency
        self.bytes_per_second = bytes_per_second
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        delay = self.latency
        if self.bytes_per_second:
            delay += len(request.content) / self.bytes_per_second
        await asyncio.sleep(delay)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Result:
    """One run. ``duty_cycle``: engine busy over the time work was queued (worker start → end of
    the last generation); ``duty_cycle_end_to_end`` runs to the last completion (adds the last
    upload); ``duty_cycle_steady`` from the first generation's start (leaves out registering)."""

    mode: str
    jobs: int
    wall_seconds: float
    engine_seconds: float
    duty_cycle: float
    duty_cycle_steady: float
    duty_cycle_end_to_end: float
    overhead_ms_per_job: float
    mb_per_output: float
    requests: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_mode(args: argparse.Namespace, pipelined: bool, workdir: Path) -> Result:
    settings = Settings(
        host="127.0.0.1",
        port=free_port(),
        data_dir=workdir,
        lease_seconds=60.0,
        heartbeat_seconds=2.0,
        secret_key="bench",
    )
    url = f"http://127.0.0.1:{settings.port}"
    with ServerThread(settings):
        async with httpx.AsyncClient(base_url=url, timeout=60) as api:
            params = {"steps": args.steps, "width": 512, "height": 512}
            jobs = [
                {"params": {**params, "prompt": f"a lighthouse at dusk, variant {i}", "seed": i}}
                for i in range(args.jobs)
            ]
            response = await api.post("/v1/jobs", json={"jobs": jobs})
            response.raise_for_status()

            transport = LatencyTransport(
                args.latency, args.upload_mbps * 1e6 / 8 if args.upload_mbps else None
            )
            engine = FakeEngine(step_seconds=args.step_seconds, padding_bytes=int(args.output_mb * 1e6))
            worker_settings = WorkerSettings(
                server=url,
                name=f"bench-{'pipelined' if pipelined else 'sequential'}",
                engine="fake",
                pipelined=pipelined,
                prefetch=args.prefetch,
                upload_concurrency=4,
                claim_wait=1.0,
            )
            worker = Worker(worker_settings, engine, client=WorkerClient(url, transport=transport))
            task = asyncio.create_task(worker.run())
            while worker.stats.jobs_completed < args.jobs:
                if task.done():
                    task.result()
                    raise RuntimeError("the worker stopped early")
                await asyncio.sleep(0.05)
            stats = worker.stats
            assert stats.started_at is not None and stats.last_completed_at is not None
            assert stats.first_engine_start_at is not None and stats.last_engine_end_at is not None
            wall = stats.last_engine_end_at - stats.started_at
            steady = stats.last_engine_end_at - stats.first_engine_start_at
            end_to_end = stats.last_completed_at - stats.started_at
            busy = stats.engine_busy_seconds
            await worker.stop()
            await task
            counts = (await api.get("/v1/admin/stats")).json()["jobs"]
            succeeded = int(counts.get("succeeded", 0))
            if succeeded != args.jobs:
                raise RuntimeError(f"{succeeded} of {args.jobs} jobs succeeded")
    return Result(
        mode="pipelined" if pipelined else "sequential",
        jobs=args.jobs,
        wall_seconds=wall,
        engine_seconds=busy,
        duty_cycle=busy / wall,
        duty_cycle_steady=busy / steady,
        duty_cycle_end_to_end=busy / end_to_end,
        overhead_ms_per_job=(wall - busy) / args.jobs * 1000,
        mb_per_output=stats.bytes_uploaded / max(1, stats.images) / 1e6,
        requests=transport.requests,
    )


async def main_async(args: argparse.Namespace) -> list[Result]:
    modes = {"both": [True, False], "pipelined": [True], "sequential": [False]}[args.mode]
    results = []
    for pipelined in modes:
        with tempfile.TemporaryDirectory(prefix="sdfleet-bench-") as tmp:
            results.append(await run_mode(args, pipelined, Path(tmp)))
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40, help="jobs queued up front (default 40)")
    parser.add_argument("--steps", type=int, default=20, help="steps per job (default 20)")
    parser.add_argument("--step-seconds", type=float, default=0.05, help="fake engine time per step (0.05)")
    parser.add_argument("--latency", type=float, default=0.1, help="added to every HTTP request, s (0.1)")
    parser.add_argument("--output-mb", type=float, default=2.0, help="size of each output, MB (2)")
    parser.add_argument("--upload-mbps", type=float, default=0.0, help="upload bandwidth, Mbit/s (0: no cap)")
    parser.add_argument("--prefetch", type=int, default=1, help="pipelined worker's prefetch (1)")
    parser.add_argument("--mode", choices=["both", "pipelined", "sequential"], default="both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def report(args: argparse.Namespace, results: list[Result]) -> None:
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    table = Table(
        title=(
            f"worker duty cycle — {args.jobs} jobs × {args.steps} steps × {args.step_seconds * 1000:.0f} ms, "
            f"{args.latency * 1000:.0f} ms per request, {args.output_mb:g} MB outputs"
        )
    )
    columns = (
        "mode",
        "wall s",
        "engine s",
        "duty cycle",
        "steady",
        "to last complete",
        "idle/job",
        "MB/out",
        "requests",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
    for r in results:
        table.add_row(
            r.mode,
            f"{r.wall_seconds:.2f}",
            f"{r.engine_seconds:.2f}",
            f"{r.duty_cycle * 100:.1f}%",
            f"{r.duty_cycle_steady * 100:.1f}%",
            f"{r.duty_cycle_end_to_end * 100:.1f}%",
            f"{r.overhead_ms_per_job:.0f} ms",
            f"{r.mb_per_output:.2f}",
            str(r.requests),
        )
    console = Console()
    console.width = max(console.width, 110)
    console.print(table)
    print(
        "duty cycle = engine busy / (worker start → end of the last generation); steady = from the first "
        "generation's start; to last complete = through the last upload and complete"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    report(args, asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
