"""The root ``sdfleet`` Typer app, the options every command shares, and the output and
settings helpers (logging, ``build_settings``, ``fail``, ``run``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sdfleet import __version__
from sdfleet.config import Settings, default_data_dir
from sdfleet.errors import SdfleetError

console = Console(stderr=True)
app = typer.Typer(
    name="sdfleet",
    help="Stable Diffusion generation and LoRA training as a service — one GPU box to a fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host", envvar="SDFLEET_HOST", help="Address to bind (default 127.0.0.1; any other needs API keys)."
    ),
]
PortOpt = Annotated[int | None, typer.Option("--port", envvar="SDFLEET_PORT", help="Port (default 7860).")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="SDFLEET_DATA_DIR",
        help=f"Database, blobs and secrets (default {default_data_dir()}).",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SDFLEET_DATABASE_URL",
        help="sqlite:///path or postgresql://… (default: SQLite in the data dir).",
    ),
]
BlobOpt = Annotated[
    str | None,
    typer.Option(
        "--blob-url", envvar="SDFLEET_BLOB_URL", help="file:///dir (default: blobs/ in the data dir)."
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar="SDFLEET_ENGINE",
        help="diffusers (real models), or fake: a TEST DOUBLE that draws placeholder images, for trying the "
        "system and simulating fleets — never for real work.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", envvar="SDFLEET_MODEL", help="Checkpoint to serve (registry name or path)."),
]


def configure_logging(level: str = "info", name: str | None = None) -> None:
    fmt = "%(asctime)s %(levelname)-7s " + (f"[{name}] " if name else "") + "%(name)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", force=True)
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command-line options that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def run(coro: Any) -> Any:
    """Run ``coro`` to the end; a :class:`SdfleetError` becomes a clear CLI error (exit 2)."""
    try:
        return asyncio.run(coro)
    except SdfleetError as exc:
        raise fail(exc.message) from None


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        typer.echo(f"sdfleet {__version__}")
        raise typer.Exit()


async def with_store(settings: Settings, fn: Any) -> Any:
    """Await ``fn(store)`` on the store of ``settings``, migrated to this version, and close the store
    after (what every command that reads or writes the database does)."""
    from sdfleet.store import SqlStore
    from sdfleet.store.migrate import ensure_schema

    store = SqlStore(settings.resolved_database_url())
    try:
        await ensure_schema(store, migrate=True)
        return await fn(store)
    finally:
        await store.close()
