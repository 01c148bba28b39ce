"""``sdfleet bench``: the load generator on the command line.

:func:`register` adds the command to the ``sdfleet`` typer app (the composition root calls it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from sdfleet.bench.load import BenchConfig, PromptTemplate, parse_size, run_bench
from sdfleet.bench.report import render_report
from sdfleet.bench.sim import HttpError

_HELP = """Measure the orchestrator: submit N jobs, wait for all of them, report.

Prints jobs/s (first submit → last finish), p50/p95/p99 queue wait and end-to-end latency,
failures and retries, the engine duty cycle per worker, cost per image and images per dollar, and
the orchestrator's own CPU milliseconds per job lifecycle (submit → claim → complete) — the number
that says what one core sustains whatever the load generator costs.

Without --server the bench starts an orchestrator of its own (`sdfleet serve` on a free loopback
port with a temporary data directory; SDFLEET_* variables apply, e.g. SDFLEET_DATABASE_URL) and
measures its CPU from /proc. With --server it reads process_cpu_seconds_total from the server's
/metrics.

Workers: --simulate-workers N runs N simulated workers inside the bench process (--engine fake,
the default then). They speak the real worker protocol over HTTP with a FAKE engine that only
sleeps --engine-seconds per job and uploads a 1×1 PNG — for measuring the orchestrator, never
for real images. Without simulated workers (--engine attached) the bench expects real workers to
be attached to the --server and only submits and waits.

The report goes to stdout (--json: one JSON object); the progress bar to stderr. Exit status 1
unless every job succeeded.

Example: sdfleet bench --jobs 5000 --simulate-workers 50 --engine-seconds 0
  --prompt "a {color} {shape}" --var color=red,green,blue --var shape=circle,square
"""


class _BarSink:
    """Feeds the bench's progress into a rich progress bar."""

    def __init__(self, progress: Progress, submitted: TaskID, finished: TaskID) -> None:
        self.progress = progress
        self.submitted = submitted
        self.finished = finished

    def update(self, submitted: int, finished: int, total: int) -> None:
        """Move the bars."""
        self.progress.update(self.submitted, completed=submitted, total=total)
        self.progress.update(self.finished, completed=finished, total=total)


def _loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def bench(
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="SDFLEET_SERVER",
            help="URL of a running orchestrator. Default: start an embedded one (no workers of its own).",
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-n", min=1, help="How many jobs to submit.")] = 1000,
    prompt: Annotated[
        str, typer.Option(help="Prompt template; {name} placeholders take the --var values.")
    ] = "a photo of a cat",
    var: Annotated[
        list[str] | None,
        typer.Option(
            "--var",
            help="name=v1,v2,… for a {name} in the prompt; repeat for more. Every combination is used, in turn.",
        ),
    ] = None,
    simulate_workers: Annotated[
        int,
        typer.Option(
            "--simulate-workers", "-w", min=0, help="Run N simulated workers (asyncio tasks) in the bench."
        ),
    ] = 0,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="fake: simulated workers with a fake engine (default with --simulate-workers); "
            "attached: real workers attached to --server do the work.",
        ),
    ] = None,
    claim_batch: Annotated[
        int,
        typer.Option(
            "--claim-batch",
            "-k",
            min=1,
            max=256,
            help="Jobs a simulated worker claims at once (the server caps it: claim_max_jobs, 32 by default).",
        ),
    ] = 8,
    engine_seconds: Annotated[
        float, typer.Option(min=0.0, help="Fake engine time per job of a simulated worker (0 allowed).")
    ] = 0.0,
    price_per_hour: Annotated[
        float, typer.Option(min=0.0, help="Price per hour a simulated worker registers (for cost).")
    ] = 1.0,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps per job.")] = 20,
    size: Annotated[str, typer.Option(help="Image size, WIDTHxHEIGHT.")] = "512x512",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_API_KEY", help="API key for a secured server (submits, reads).")
    ] = "",
    worker_token: Annotated[
        str | None,
        typer.Option(
            envvar="SDFLEET_WORKER_TOKEN", help="Worker key for the simulated workers (default: --token)."
        ),
    ] = None,
    submit_batch: Annotated[
        int, typer.Option(min=1, max=1000, help="Jobs per POST /v1/jobs request.")
    ] = 1000,
    long_poll: Annotated[
        float, typer.Option(min=0.0, max=300.0, help="Seconds a simulated worker's claim waits for work.")
    ] = 10.0,
    upload: Annotated[
        str,
        typer.Option(
            help="inline: outputs travel in the complete call (local blob store); put: PUT to the upload URL."
        ),
    ] = "inline",
    timeout: Annotated[float, typer.Option(min=1.0, help="Give up waiting after this many seconds.")] = 600.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory of the embedded server (default: a temporary one, removed after)."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress bar on stderr (default: when it is a terminal)."
        ),
    ] = None,
) -> None:
    """Measure the orchestrator: submit N jobs, wait for all of them, report."""
    err = Console(stderr=True)
    if engine is None:
        engine = "fake" if simulate_workers else "attached"
    if engine not in ("fake", "attached"):
        err.print("[bold red]error:[/] --engine must be fake or attached")
        raise typer.Exit(2)
    if upload not in ("inline", "put"):
        err.print("[bold red]error:[/] --upload must be inline or put")
        raise typer.Exit(2)
    mode: Literal["fake", "attached"] = "fake" if engine == "fake" else "attached"
    upload_mode: Literal["inline", "put"] = "inline" if upload == "inline" else "put"
    try:
        width, height = parse_size(size)
        config = BenchConfig(
            jobs=jobs,
            prompt=PromptTemplate.parse(prompt, var or []),
            server=server,
            engine=mode,
            simulate_workers=simulate_workers,
            claim_batch=claim_batch,
            engine_seconds=engine_seconds,
            price_per_hour=price_per_hour,
            steps=steps,
            width=width,
            height=height,
            token=token,
            worker_token=worker_token,
            submit_batch=submit_batch,
            long_poll=long_poll,
            upload=upload_mode,
            timeout=timeout,
            data_dir=data_dir,
        )
        config.check()
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    show = err.is_terminal if progress is None else progress
    bar = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show,
        transient=False,
    )
    sink = _BarSink(
        bar, bar.add_task("submitted", total=config.jobs), bar.add_task("finished", total=config.jobs)
    )
    try:
        with bar, asyncio.Runner(loop_factory=_loop_factory) as runner:
            report = runner.run(run_bench(config, sink))
    except (RuntimeError, OSError, HttpError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(report.to_json())
    else:
        render_report(report, Console())
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the ``sdfleet`` typer app."""
    app.command("bench", help=_HELP)(bench)
