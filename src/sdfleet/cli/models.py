"""``sdfleet models``: the model registry (checkpoints, LoRAs, VAEs, embeddings, upscalers, face models)."""

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
    help="The model registry: checkpoints, LoRAs, VAEs, embeddings, upscalers, face models.",
    no_args_is_help=True,
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
        str,
        typer.Option(
            help="checkpoint, lora, vae, embedding, controlnet, ip_adapter, image_encoder, upscaler, "
            "face_restorer, face_detector"
        ),
    ] = "checkpoint",
    arch: Annotated[
        str | None,
        typer.Option(
            help="sd1, sd2 or sdxl; an upscaler's net family; an IP-Adapter's family and image encoder "
            "(sd1-vit-h); an image encoder's family (vit-h) — read from a local file if not given"
        ),
    ] = None,
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
    scale: int | None = None
    if model_kind == ModelKind.UPSCALER and Path(source).is_absolute():
        net_arch, scale = upscaler_shape(Path(source))
        arch = arch or net_arch
    if model_kind == ModelKind.CONTROLNET and Path(source).is_absolute():
        arch = arch or controlnet_arch(Path(source))
    if model_kind in (ModelKind.IP_ADAPTER, ModelKind.IMAGE_ENCODER) and Path(source).is_absolute():
        arch = arch or ip_adapter_arch(Path(source), model_kind)
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
        scale=scale,
    )
    with console.status(f"registering {name} (hashing local files)…"):
        added = run(with_models(settings, lambda ms: ms.add(record)))
    console.print(
        f"registered [bold]{added.name}[/] ({added.kind.value}, {added.arch or 'any arch'}) "
        f"sha256 {added.sha256} ({added.size:,} bytes)"
    )


def upscaler_shape(path: Path) -> tuple[str, int]:
    """An upscaler file's net family and scale, from its header (the two built-in families), else through
    spandrel when it is installed; exits with the reason when it is neither."""
    from sdfleet.engine.sd.checkpoints import read_header
    from sdfleet.engine.upscale.detect import detect_net
    from sdfleet.errors import SdfleetError

    if path.suffix.lower() != ".safetensors":
        raise fail(
            f"{path.name}: upscalers register as .safetensors; convert it first: sdfleet models convert {path}"
        )
    try:
        info = detect_net(read_header(path).shapes)
        return info.family, info.scale
    except SdfleetError as exc:
        from sdfleet.engine.upscale.loader import load_upscaler, spandrel_installed

        if not spandrel_installed():
            raise fail(f"{path.name}: {exc.message}") from None
        try:
            net = load_upscaler(path, device="cpu", use_spandrel=True)
        except SdfleetError as inner:
            raise fail(f"{path.name}: {inner.message}") from None
        return net.family[:16], net.scale


def _other_net(path: Path) -> str:
    """What a converted file is when it is no upscaler: a ControlNet of some family, or unknown."""
    from sdfleet.engine.controlnet.loader import read_controlnet
    from sdfleet.errors import SdfleetError

    try:
        info = read_controlnet(path)
    except SdfleetError:
        return "not an upscaler or ControlNet sdfleet knows by itself"
    return f"a ControlNet for {info.arch.upper()} ({info.layout} layout)"


def controlnet_arch(path: Path) -> str:
    """The SD family a ControlNet file steers (``sd1``/``sd2``/``sdxl``), from its header; exits with the
    reason when it is not a ControlNet sdfleet can load."""
    from sdfleet.engine.controlnet.loader import read_controlnet
    from sdfleet.errors import SdfleetError

    try:
        return read_controlnet(path).arch
    except SdfleetError as exc:
        raise fail(exc.message) from None


def ip_adapter_arch(path: Path, kind: Any) -> str:
    """What the registry records of an IP-Adapter (its SD family and the image encoder it reads:
    ``sd1-vit-h``) or of an image encoder (its family: ``vit-h``), from the file's header; exits with the
    reason when it is not one."""
    from sdfleet.domain import ModelKind
    from sdfleet.engine.controlnet.ipadapter_detect import read_image_encoder, read_ip_adapter
    from sdfleet.errors import SdfleetError

    try:
        if kind == ModelKind.IP_ADAPTER:
            return read_ip_adapter(path).registry_arch
        return read_image_encoder(path).family
    except SdfleetError as exc:
        raise fail(exc.message) from None


def upscaler_name(path: Path) -> str:
    """The registry name ``sdfleet up --upscaler`` gives a file: A1111's display name for Real-ESRGAN's own
    files (``RealESRGAN_x4plus`` → ``R-ESRGAN 4x+``), else the file's stem (``4x-UltraSharp``)."""
    from sdfleet.engine.upscale.detect import a1111_name

    return a1111_name(path.stem) or path.stem


@models_app.command("convert")
def models_convert(
    source: Annotated[Path, typer.Argument(help="A pickle file: .pth, .pt, .ckpt or .bin.")],
    target: Annotated[
        Path | None, typer.Argument(help="The .safetensors file to write (default: beside the source).")
    ] = None,
) -> None:
    """Convert a pickled model to .safetensors, loading it with torch's weights-only unpickler (tensors and
    plain containers only: a file that needs code to load is refused, and nothing in it runs)."""
    from sdfleet.engine.upscale.loader import convert_pickle
    from sdfleet.errors import SdfleetError

    out = target or source.with_suffix(".safetensors")
    if out.exists():
        raise fail(f"{out} exists; remove it or name another target")
    try:
        with console.status(f"converting {source.name} (weights only)…"):
            info = convert_pickle(source, out)
    except SdfleetError as exc:
        raise fail(exc.message) from None
    what = f"an upscaler: {info.family} ×{info.scale}" if info else _other_net(out)
    console.print(f"wrote [bold]{out}[/] ({what})")


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
        arch = (m.arch or "") + (f" ×{m.scale}" if m.scale else "")
        table.add_row(m.name, m.kind.value, arch, m.short_hash, f"{m.size or 0:,}", m.source)
    Console().print(table)


@models_app.command("remove")
def models_remove(name: str, database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a model from the registry (files cached on workers age out by themselves)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    run(with_models(settings, lambda ms: ms.remove(name)))
    typer.echo(f"removed {name}")
