"""``sdfleet keys``: create, list and revoke API keys (stored hashed)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sdfleet.cli.app import (
    DataDirOpt,
    DbOpt,
    build_settings,
    console,
    run,
    with_store,
)
from sdfleet.config import Settings

keys_app = typer.Typer(help="Create, list and revoke API keys (stored hashed).", no_args_is_help=True)


async def _with_keys(settings: Settings, fn: Any) -> Any:
    from sdfleet.jobs.keys import KeyService

    return await with_store(settings, lambda store: fn(KeyService(store)))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Owner of the jobs submitted with this key.")] = "default",
    scope: Annotated[list[str], typer.Option(help="user, admin, worker or metrics (repeatable).")] = ["user"],  # noqa: B006
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key. The secret is printed once; only its hash is stored."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    created = run(_with_keys(settings, lambda ks: ks.create(tenant, scope, name)))
    console.print(f"key [bold]{created.record.id}[/] for tenant [bold]{tenant}[/], scopes {', '.join(scope)}")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list(database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """List keys (never their secrets)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    records = run(_with_keys(settings, lambda ks: ks.list()))
    table = Table("id", "prefix", "tenant", "scopes", "name", "created", "revoked")
    for r in records:
        table.add_row(
            r.id,
            f"sdf_{r.prefix}_…",
            r.tenant,
            ",".join(r.scopes),
            r.name,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.revoked_at)) if r.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id or prefix.")],
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key (takes effect within seconds on every replica)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    run(_with_keys(settings, lambda ks: ks.revoke(key_id)))
    typer.echo(f"revoked {key_id}")
