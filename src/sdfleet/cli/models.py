"""``sdfleet models``: the model registry (checkpoints, LoRAs, VAEs, embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sdfleet.cli.app import (
    DataDirOpt,
    DbOpt,
    build_settings,
    console,
    fail,
    run,
    with_store,
)
from sdfleet.config import Settings

models_app = typer.Typer(
    help="The model registry: checkpoints, LoRAs, VAEs, embeddings.", no_args_is_help=True
)


async def with_models(settings: Settings, fn: Any) -> Any:
    """Await ``fn(ModelService)`` on the migrated store of ``settings``."""
    from sdfleet.jobs.registry import ModelService

    return await with_store(
        settings, lambda store: fn(ModelService(store, allow_pickle=settings.allow_pickle))
    )


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Registry name; jobs use it (<lora:NAME:0.8>, model=NAME).")],
    source: Annotated[
        str,
        typer.Argument(
            help="Absolute path, https://…, hf://org/repo/file, civitai://version/ID or s3://bucket/key."
        ),
    ],
    kind: Annotated[
        str, typer.Option(help="checkpoint, lora, vae, embedding, controlnet, upscaler")
    ] = "checkpoint",
    arch: Annotated[str | None, typer.Option(help="sd1, sd2 or sdxl")] = None,
    sha256: Annotated[str | None, typer.Option(help="Required for remote sources.")] = None,
    size: Annotated[int | None, typer.Option(help="Bytes; required for remote sources.")] = None,
    trigger_word: Annotated[list[str], typer.Option(help="Repeatable.")] = [],  # noqa: B006
    default_weight: float = 1.0,
    description: str = "",
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Checkpoints: the side in px it was trained at (read from a local file if not given)."
        ),
    ] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Register a model (a local file is hashed now; remote ones are verified by workers)."""
    from sdfleet.domain import ModelKind, ModelRecord

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    try:
        model_kind = ModelKind(kind)
    except ValueError:
        raise fail(f"--kind must be one of {', '.join(k.value for k in ModelKind)}") from None
    if resolution is None and model_kind == ModelKind.CHECKPOINT and Path(source).is_absolute():
        from sdfleet.engine.sd.checkpoints import native_resolution

        # only what the file itself says (its embedded configs); the architecture's usual size is the default
        resolution = native_resolution(Path(source))
    record = ModelRecord(
        name=name,
        kind=model_kind,
        arch=arch,
        source=source,
        sha256=sha256,
        size=size,
        trigger_words=list(trigger_word),
        default_weight=default_weight,
        description=description,
        resolution=resolution,
    )
    with console.status(f"registering {name} (hashing local files)…"):
        added = run(with_models(settings, lambda ms: ms.add(record)))
    console.print(
        f"registered [bold]{added.name}[/] ({added.kind.value}, {added.arch or 'any arch'}) "
        f"sha256 {added.sha256} ({added.size:,} bytes)"
    )


@models_app.command("list")
def models_list(
    kind: Annotated[str | None, typer.Option()] = None,
    database_url: DbOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List registered models."""
    from sdfleet.domain import ModelKind

    settings = build_settings(database_url=database_url, data_dir=data_dir)
    records = run(with_models(settings, lambda ms: ms.list(ModelKind(kind) if kind else None)))
    table = Table("name", "kind", "arch", "hash", "size", "source")
    for m in records:
        table.add_row(m.name, m.kind.value, m.arch or "", m.short_hash, f"{m.size or 0:,}", m.source)
    Console().print(table)


@models_app.command("remove")
def models_remove(name: str, database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a model from the registry (files cached on workers age out by themselves)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    run(with_models(settings, lambda ms: ms.remove(name)))
    typer.echo(f"removed {name}")
