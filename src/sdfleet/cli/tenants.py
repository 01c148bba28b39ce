"""``sdfleet tenants``: tenants' quotas, rate limits and fair-share weights."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sdfleet.cli.app import (
    DataDirOpt,
    DbOpt,
    build_settings,
    run,
    with_store,
)
from sdfleet.config import Settings

tenants_app = typer.Typer(
    help="Tenants' quotas, rate limits and fair-share weights (defaults: SDFLEET_QUOTAS__*).",
    no_args_is_help=True,
)


async def _with_jobs(settings: Settings, fn: Any) -> Any:
    from sdfleet.jobs.service import JobService

    return await with_store(settings, lambda store: fn(JobService(store, settings)))


def _limit_text(value: Any) -> str:
    return "unlimited" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _limit_value(name: str, text: str) -> Any:
    """A limit from the command line: a number, ``unlimited`` or ``default``."""
    from sdfleet.jobs.quotas import DEFAULT

    word = text.strip().lower()
    if word == "default":
        return DEFAULT
    if word in ("unlimited", "none"):
        return None
    try:
        number = float(word)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give a number, 'unlimited' or 'default'", param_hint=f"--{name}"
        ) from None
    return int(number) if name == "max-concurrent" and number.is_integer() else number


@tenants_app.command("list")
def tenants_list(database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Every tenant's effective limits (* marks the tenant's own, the rest are the defaults)."""
    from sdfleet.jobs.quotas import LIMIT_NAMES

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    rows = run(_with_jobs(settings, lambda js: js.list_tenants()))
    table = Table("tenant", *LIMIT_NAMES)
    for tenant, limits in rows:
        cells = [
            _limit_text(getattr(limits, n)) + ("*" if n in limits.overrides else "") for n in LIMIT_NAMES
        ]
        table.add_row(tenant.id, *cells)
    Console().print(table)


@tenants_app.command("show")
def tenants_show(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One tenant's limits and what is left of each, as JSON."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    typer.echo(json.dumps(run(_with_jobs(settings, lambda js: js.quota_status(tenant))), indent=2))


@tenants_app.command("set")
def tenants_set(
    tenant: Annotated[str, typer.Argument(help="Tenant id (created if new).")],
    rate: Annotated[str | None, typer.Option(help="Jobs per second on average.")] = None,
    burst: Annotated[str | None, typer.Option(help="Jobs at once (bucket size).")] = None,
    max_concurrent: Annotated[str | None, typer.Option(help="Queued + running jobs at once.")] = None,
    gpu_seconds_per_day: Annotated[str | None, typer.Option(help="Estimated GPU seconds per day.")] = None,
    max_job_gpu_seconds: Annotated[str | None, typer.Option(help="Largest job, estimated GPU s.")] = None,
    weight: Annotated[str | None, typer.Option(help="Fair-share weight (default 1).")] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set some of a tenant's limits: a number, 'unlimited' or 'default' (back to the server's)."""
    given = {
        "rate": rate,
        "burst": burst,
        "max_concurrent": max_concurrent,
        "gpu_seconds_per_day": gpu_seconds_per_day,
        "max_job_gpu_seconds": max_job_gpu_seconds,
        "weight": weight,
    }
    changes = {k: _limit_value(k.replace("_", "-"), v) for k, v in given.items() if v is not None}
    if not changes:
        raise typer.BadParameter("nothing to set: give at least one limit option")
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    limits = run(_with_jobs(settings, lambda js: js.set_tenant_limits(tenant, changes)))
    for name, value in limits.as_dict().items():
        typer.echo(f"{name}: {_limit_text(value)}{' (own)' if name in limits.overrides else ''}")
