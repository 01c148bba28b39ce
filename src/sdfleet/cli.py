"""The ``sdfleet`` command: the composition root. Builds settings, stores and engines from
options and environment, and hands them down; nothing else reads configuration."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sdfleet import __version__
from sdfleet.config import Settings, WorkerSettings, default_data_dir
from sdfleet.errors import SdfleetError

console = Console(stderr=True)
app = typer.Typer(
    name="sdfleet",
    help="Stable Diffusion generation and LoRA training as a service — one GPU box to a fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tenants_app = typer.Typer(
    help="Tenants' quotas, rate limits and fair-share weights (defaults: SDFLEET_QUOTAS__*).",
    no_args_is_help=True,
)
app.add_typer(tenants_app, name="tenants")
models_app = typer.Typer(
    help="The model registry: checkpoints, LoRAs, VAEs, embeddings.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

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


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except SdfleetError as exc:
        raise fail(exc.message) from None


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        typer.echo(f"sdfleet {__version__}")
        raise typer.Exit()


# ============================================================================ serve


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    blob_url: BlobOpt = None,
    log_level: Annotated[str, typer.Option(envvar="SDFLEET_LOG_LEVEL")] = "info",
) -> None:
    """Run the orchestrator only (HTTP API, queue, web page). Workers connect with `sdfleet worker`."""
    import uvicorn

    from sdfleet.api.app import create_app

    configure_logging(log_level, "orchestrator")
    try:
        settings = build_settings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            blob_url=blob_url,
            log_level=log_level,
        )
        application = create_app(settings)
    except SdfleetError as exc:
        raise fail(exc.message) from None
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
    )


# ============================================================================ worker


@app.command()
def worker(
    server: Annotated[
        str, typer.Option(envvar="SDFLEET_WORKER_SERVER", help="Orchestrator URL.")
    ] = "http://127.0.0.1:7860",
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_WORKER_TOKEN", help="Worker API key (scope worker).")
    ] = "",
    engine: EngineOpt = "diffusers",
    model: ModelOpt = None,
    name: Annotated[
        str | None, typer.Option(envvar="SDFLEET_WORKER_NAME", help="Shown in the fleet view.")
    ] = None,
    price_per_hour: Annotated[
        float,
        typer.Option(
            envvar="SDFLEET_WORKER_PRICE_PER_HOUR", help="USD per hour of this GPU, for cost per image."
        ),
    ] = 0.0,
    fake_step_seconds: Annotated[
        float,
        typer.Option(envvar="SDFLEET_WORKER_FAKE_STEP_SECONDS", help="Time per step of the fake engine."),
    ] = 0.02,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="SDFLEET_WORKER_CACHE_DIR",
            help="Where registry models are kept once fetched (default ~/.cache/sdfleet/models).",
        ),
    ] = None,
    cache_gb: Annotated[
        float | None,
        typer.Option(
            envvar="SDFLEET_WORKER_CACHE_GB", help="Disk budget of the model cache, GB (default 50)."
        ),
    ] = None,
    allow_private_model_urls: Annotated[
        bool,
        typer.Option(
            envvar="SDFLEET_WORKER_ALLOW_PRIVATE_MODEL_URLS",
            help="Let model sources point at private/loopback addresses (trusted networks only).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(envvar="SDFLEET_LOG_LEVEL")] = "info",
) -> None:
    """Run one GPU worker: pull jobs from the orchestrator, generate, upload, report.

    Models that jobs name are fetched from their registry source into the model cache (Hugging Face
    and Civitai tokens: SDFLEET_WORKER_HF_TOKEN, SDFLEET_WORKER_CIVITAI_TOKEN)."""
    from sdfleet.worker.runner import run_worker

    configure_logging(log_level, name or "worker")
    settings = WorkerSettings(
        server=server,
        token=token,
        engine=engine,
        model=model,
        name=name,
        price_per_hour=price_per_hour,
        fake_step_seconds=fake_step_seconds,
        allow_private_model_urls=allow_private_model_urls,
        **_given(cache_dir=cache_dir, cache_gb=cache_gb),
    )
    _run(run_worker(settings))


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given (None: leave the setting to the environment or its default)."""
    return {k: v for k, v in options.items() if v is not None}


# ============================================================================ up


def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@app.command()
def up(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            envvar="SDFLEET_WORKERS",
            help="Local workers (default: one per GPU, or one CPU worker).",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    engine: EngineOpt = "diffusers",
    model: ModelOpt = None,
    fake_step_seconds: Annotated[
        float,
        typer.Option(envvar="SDFLEET_WORKER_FAKE_STEP_SECONDS", help="Time per step of the fake engine."),
    ] = 0.02,
    log_level: Annotated[str, typer.Option(envvar="SDFLEET_LOG_LEVEL")] = "info",
) -> None:
    """Start everything on this machine: the orchestrator and local workers, supervised.

    Data lives under --data-dir. Ctrl-C stops the workers (they hand back their jobs), then the server."""
    from sdfleet.supervise import Child, Supervisor

    configure_logging(log_level, "up")
    if engine == "diffusers":
        if importlib.util.find_spec("diffusers") is None:
            raise fail(
                "the diffusers engine needs the [engine] extra: pip install -e '.[engine]' "
                "(or try the system with --engine fake)"
            )
        if not model:
            from sdfleet.demo.model import DEMO_CHECKPOINT, demo_available

            if not demo_available():
                raise fail(
                    "which model? --model PATH (a .safetensors checkpoint or a diffusers folder); "
                    "or --engine fake to try the system with placeholder images"
                )
            model = str(DEMO_CHECKPOINT)
        model = str(Path(model).expanduser().resolve())
    try:
        settings = build_settings(host=host, port=port, data_dir=data_dir, log_level=log_level)
        from sdfleet.api.auth import auth_is_open

        auth_is_open(settings)
    except SdfleetError as exc:
        raise fail(exc.message) from None
    gpus = _gpu_count()
    n_workers = workers if workers is not None else max(1, gpus)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SDFLEET_DATA_DIR": str(data),
        "SDFLEET_HOST": settings.host,
        "SDFLEET_PORT": str(settings.port),
        "SDFLEET_LOG_LEVEL": log_level,
    }
    server_url = (
        f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    )
    token = _local_worker_token(settings)  # in every auth mode: keyless calls end once keys exist
    if model and engine == "diffusers":
        _register_default_model(settings, Path(model))
    exe = [sys.executable, "-m", "sdfleet"]
    orchestrator = Child("orchestrator", [*exe, "serve"], env)
    worker_children = []
    for i in range(n_workers):
        wenv = {**env, "SDFLEET_WORKER_TOKEN": token}
        if gpus:
            wenv["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        argv = [
            *exe,
            "worker",
            "--server",
            server_url,
            "--engine",
            engine,
            "--name",
            f"local-{i + 1}",
            "--fake-step-seconds",
            str(fake_step_seconds),
        ]
        if model:
            argv += ["--model", model]
        worker_children.append(Child(f"worker-{i + 1}", argv, wenv))

    def ready() -> bool:
        try:
            return httpx.get(f"{server_url}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    sup = Supervisor(orchestrator, worker_children, data / "run" / "processes.json", ready)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    try:
        sup.start()
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    public = settings.public_url or server_url
    console.print(
        Panel.fit(
            f"[bold]sdfleet {__version__}[/] is up at [bold cyan]{public}[/]\n"
            f"web page  {public}/ui      API docs  {public}/docs\n"
            f"workers   {n_workers} × {engine}{' (TEST DOUBLE: placeholder images)' if engine == 'fake' else ''}\n"
            f"data      {data}\n"
            "Ctrl-C to stop",
            title="sdfleet up",
        )
    )
    try:
        sup.run()
    finally:
        console.print("stopping: workers hand back their jobs, then the server stops…")
        sup.stop()


def _register_default_model(settings: Settings, model: Path) -> None:
    """Put `up --model`'s checkpoint in the registry under its file (or folder) name, so jobs and
    A1111 clients can name it; the first start hashes it (cached beside it afterwards)."""
    from sdfleet.domain import ModelKind, ModelRecord
    from sdfleet.engine.sd.checkpoints import default_arch, native_resolution

    try:
        arch = default_arch(model)
    except SdfleetError as exc:
        raise fail(f"{model}: {exc.message}") from None
    name = model.stem if model.is_file() else model.name
    record = ModelRecord(
        name=name,
        kind=ModelKind.CHECKPOINT,
        arch=arch,
        source=str(model),
        sha256=None,
        size=None,
        description="served by sdfleet up --model",
        resolution=native_resolution(model, arch),
    )

    is_file = model.is_file()

    async def add(ms: Any) -> Any:
        return await ms.add(record, hash_local=is_file)

    with console.status(f"registering {name} ({arch})…"):
        _run(_with_models(settings, add))


def _local_worker_token(settings: Settings) -> str:
    """The worker key of `up`'s local workers, kept in the data dir (0600) and checked against the
    database at every start: a revoked or unknown one (a fresh database) is replaced."""
    path = settings.data_dir / "worker_token"
    kept = path.read_text().strip() if path.exists() else ""

    async def ensure() -> str:
        from sdfleet.errors import AuthError
        from sdfleet.jobs.keys import KeyService
        from sdfleet.store import SqlStore
        from sdfleet.store.migrate import ensure_schema

        store = SqlStore(settings.resolved_database_url())
        try:
            await ensure_schema(store, migrate=True)
            keys = KeyService(store)
            if kept:
                try:
                    if (await keys.verify(kept)).is_worker:
                        return kept
                except AuthError:
                    pass
            created = await keys.create("local", ["worker"], name="sdfleet up local workers")
            return created.secret
        finally:
            await store.close()

    secret: str = _run(ensure())
    if secret != kept:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
    return secret


# ============================================================================ migrate and keys


@app.command()
def migrate(database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Bring the database schema up to this version (run before starting replicas)."""
    from sdfleet.store import SqlStore
    from sdfleet.store.migrate import current_revision, head_revision, upgrade

    settings = build_settings(database_url=database_url, data_dir=data_dir)

    async def go() -> tuple[str | None, str | None]:
        store = SqlStore(settings.resolved_database_url())
        try:
            before = await current_revision(store)
            await upgrade(store)
            return before, await current_revision(store)
        finally:
            await store.close()

    before, after = _run(go())
    typer.echo(f"schema {before or 'empty'} → {after} (head {head_revision()})")


async def _with_keys(settings: Settings, fn: Any) -> Any:
    from sdfleet.jobs.keys import KeyService
    from sdfleet.store import SqlStore
    from sdfleet.store.migrate import ensure_schema

    store = SqlStore(settings.resolved_database_url())
    try:
        await ensure_schema(store, migrate=True)
        return await fn(KeyService(store))
    finally:
        await store.close()


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
    created = _run(_with_keys(settings, lambda ks: ks.create(tenant, scope, name)))
    console.print(f"key [bold]{created.record.id}[/] for tenant [bold]{tenant}[/], scopes {', '.join(scope)}")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list(database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """List keys (never their secrets)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    records = _run(_with_keys(settings, lambda ks: ks.list()))
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
    _run(_with_keys(settings, lambda ks: ks.revoke(key_id)))
    typer.echo(f"revoked {key_id}")


# ============================================================================ tenants (quotas)


async def _with_jobs(settings: Settings, fn: Any) -> Any:
    from sdfleet.jobs.service import JobService
    from sdfleet.store import SqlStore
    from sdfleet.store.migrate import ensure_schema

    store = SqlStore(settings.resolved_database_url())
    try:
        await ensure_schema(store, migrate=True)
        return await fn(JobService(store, settings))
    finally:
        await store.close()


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
    rows = _run(_with_jobs(settings, lambda js: js.list_tenants()))
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
    typer.echo(json.dumps(_run(_with_jobs(settings, lambda js: js.quota_status(tenant))), indent=2))


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
    limits = _run(_with_jobs(settings, lambda js: js.set_tenant_limits(tenant, changes)))
    for name, value in limits.as_dict().items():
        typer.echo(f"{name}: {_limit_text(value)}{' (own)' if name in limits.overrides else ''}")


async def _with_models(settings: Settings, fn: Any) -> Any:
    from sdfleet.jobs.registry import ModelService
    from sdfleet.store import SqlStore
    from sdfleet.store.migrate import ensure_schema

    store = SqlStore(settings.resolved_database_url())
    try:
        await ensure_schema(store, migrate=True)
        return await fn(ModelService(store, allow_pickle=settings.allow_pickle))
    finally:
        await store.close()


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
        added = _run(_with_models(settings, lambda ms: ms.add(record)))
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
    records = _run(_with_models(settings, lambda ms: ms.list(ModelKind(kind) if kind else None)))
    table = Table("name", "kind", "arch", "hash", "size", "source")
    for m in records:
        table.add_row(m.name, m.kind.value, m.arch or "", m.short_hash, f"{m.size or 0:,}", m.source)
    Console().print(table)


@models_app.command("remove")
def models_remove(name: str, database_url: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a model from the registry (files cached on workers age out by themselves)."""
    settings = build_settings(database_url=database_url, data_dir=data_dir)
    _run(_with_models(settings, lambda ms: ms.remove(name)))
    typer.echo(f"removed {name}")


# ============================================================================ submit


@app.command()
def submit(
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    server: Annotated[str, typer.Option(envvar="SDFLEET_SERVER")] = "http://127.0.0.1:7860",
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_API_KEY", help="API key, if the server needs one.")
    ] = "",
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    steps: int = 20,
    size: Annotated[
        str | None,
        typer.Option(
            help="WIDTHxHEIGHT (default: the checkpoint's native size, from the server's registry)."
        ),
    ] = None,
    seed: int = -1,
    batch_size: int = 1,
    count: Annotated[int, typer.Option("--count", "-n", help="Number of jobs.")] = 1,
    sampler: str = "Euler a",
    cfg_scale: float = 7.0,
    model: ModelOpt = None,
    wait: Annotated[bool, typer.Option(help="Wait for the jobs and download the images.")] = True,
    out: Annotated[Path, typer.Option(help="Where to save the images.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished jobs as JSON.")] = False,
) -> None:
    """Submit generation jobs to a running server, follow them, save the images."""
    params: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "sampler_name": sampler,
        "cfg_scale": cfg_scale,
        "model": model,
    }
    if size is not None:
        try:
            params["width"], params["height"] = (int(v) for v in size.lower().split("x", 1))
        except ValueError:
            raise fail("--size must look like 512x512") from None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server, headers=headers, timeout=30) as client:
        if size is None:
            side = _native_side(client, model)
            if side is not None:  # else the server's own default size
                params["width"] = params["height"] = side
        r = client.post("/v1/jobs", json={"jobs": [{"params": params} for _ in range(count)]})
        if r.status_code >= 400:
            raise fail(_error_text(r))
        ids = [j["id"] for j in r.json()["jobs"]]
        console.print(f"submitted {len(ids)} job(s): {', '.join(ids)}")
        if not wait:
            return
        finished = _follow(client, ids)
    saved = _save_outputs(server, headers, finished, out)
    if as_json:
        typer.echo(json.dumps(finished, indent=2))
    for path in saved:
        console.print(f"saved {path}")
    failed = [j for j in finished if j["state"] != "succeeded"]
    for j in failed:
        console.print(f"[red]{j['id']} {j['state']}:[/] {(j.get('error') or {}).get('message')}")
    if failed:
        raise typer.Exit(1)


TRAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@app.command()
def train(
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of training images (PNG/JPEG/WebP); a same-named .txt file next to one is its caption."
        ),
    ],
    base_model: Annotated[
        str, typer.Option("--base-model", "-m", help="Registry name of the base checkpoint.")
    ],
    name: Annotated[str, typer.Option("--name", help="Registry name of the LoRA it makes.")],
    trigger: Annotated[
        str | None, typer.Option("--trigger", help="The new concept's token (goes into the instance prompt).")
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", help="Instance prompt (default: 'a photo of <trigger>'); captions override it."
        ),
    ] = None,
    server: Annotated[str, typer.Option(envvar="SDFLEET_SERVER")] = "http://127.0.0.1:7860",
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_API_KEY", help="API key, if the server needs one.")
    ] = "",
    steps: int = 1000,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Training side in px (default: the base checkpoint's native size, from the server)."
        ),
    ] = None,
    rank: int = 8,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    batch_size: int = 1,
    seed: int = 0,
    train_text_encoder: bool = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: none).")] = 100,
    keep_checkpoints: int = 2,
    validation_prompt: Annotated[
        list[str] | None, typer.Option("--validation-prompt", help="Rendered at the end (repeatable).")
    ] = None,
    extra: Annotated[
        str | None, typer.Option("--params", help="More LoraTrainSpec fields as a JSON object.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
) -> None:
    """Train a LoRA on a folder of images: upload them, submit a train_lora job, follow its progress
    (step, loss, ETA) and print the name it is registered under (usable as <lora:NAME:1> at once)."""
    if not images.is_dir():
        raise fail(f"{images} is not a folder")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in TRAIN_IMAGE_SUFFIXES)
    if not files:
        raise fail(f"no {', '.join(TRAIN_IMAGE_SUFFIXES)} images in {images}")
    instance_prompt = prompt or (f"a photo of {trigger}" if trigger else None)
    if instance_prompt is None:
        raise fail("give --trigger or --prompt")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        refs = []
        for path in files:
            r = client.post("/v1/inputs", content=path.read_bytes())
            if r.status_code >= 400:
                raise fail(f"{path.name}: {_error_text(r)}")
            caption_file = path.with_suffix(".txt")
            caption = caption_file.read_text().strip() if caption_file.is_file() else None
            refs.append({"ref": r.json()["ref"], "caption": caption or None})
        params: dict[str, Any] = {
            "name": name,
            "base_model": base_model,
            "images": refs,
            "instance_prompt": instance_prompt,
            "trigger_word": trigger,
            "steps": steps,
            "rank": rank,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seed": seed,
            "train_text_encoder": train_text_encoder,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep_checkpoints,
            "validation_prompts": validation_prompt or [],
        }
        side = resolution if resolution is not None else _native_side(client, base_model)
        if side is not None:  # else the server's default (an unknown base model is refused at submit)
            params["resolution"] = side
        if extra:
            try:
                params.update(json.loads(extra))
            except (ValueError, TypeError) as exc:
                raise fail(f"--params is not a JSON object: {exc}") from None
        r = client.post("/v1/jobs", json={"kind": "train_lora", "params": params})
        if r.status_code >= 400:
            raise fail(_error_text(r))
        job_id = r.json()["id"]
        console.print(f"uploaded {len(refs)} image(s); training job {job_id}")
        if not wait:
            return
        job = _follow_training(client, job_id)
    if job["state"] != "succeeded":
        console.print(f"[red]{job_id} {job['state']}:[/] {(job.get('error') or {}).get('message')}")
        raise typer.Exit(1)
    lora = job["result"].get("lora") or {}
    training = job["result"].get("training") or {}
    resumed = training.get("resumed_from")
    console.print(
        f"trained {steps} steps in {job['engine_seconds']:.0f} s of worker time (${job['cost_usd']:.4f})"
        + (f", resumed from step {resumed}" if resumed else "")
    )
    if lora.get("name"):
        typer.echo(lora["name"])
        if lora.get("problem"):
            console.print(f"[yellow]{lora['problem']}[/]")
        console.print(f"use it as <lora:{lora['name']}:1>")
    else:
        raise fail(f"the LoRA was not registered: {lora.get('problem')}")


def _native_side(client: httpx.Client, model: str | None) -> int | None:
    """The side in px a checkpoint was trained at, as the server's registry says (``GET /v1/models/…``).

    Without a model name: the checkpoint jobs without one run on — the registry's first checkpoint, as the
    web page takes it. ``None`` when the server cannot say (no such model, no checkpoint registered, an
    older server): the caller then leaves the size to the server's defaults."""
    try:
        if model:
            r = client.get(f"/v1/models/{model}")
            found = r.json() if r.status_code == 200 else None
        else:
            r = client.get("/v1/models", params={"kind": "checkpoint"})
            listed = r.json().get("models") if r.status_code == 200 else None
            found = listed[0] if listed else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    side = found.get("resolution") if isinstance(found, dict) else None
    return side if isinstance(side, int) and not isinstance(side, bool) and side > 0 else None


def _follow_training(client: httpx.Client, job_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("queued", total=1.0, detail="")
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            p = job["progress"]
            detail = []
            if p.get("loss") is not None:
                detail.append(f"loss {p['loss']:.4f}")
            if p.get("it_per_s"):
                detail.append(f"{p['it_per_s']:.2f} it/s")
            if p.get("eta_seconds") is not None and job["state"] == "running":
                detail.append(f"ETA {p['eta_seconds']:.0f} s")
            if job["checkpoints"]:
                detail.append(f"checkpoint @{job['checkpoints'][-1]['step']}")
            label = (
                job["state"] if job["state"] != "queued" or not job.get("wait_reason") else "queued (waiting)"
            )
            progress.update(
                task,
                total=max(1, p["total"]),
                completed=p["step"] if job["state"] != "succeeded" else max(1, p["total"]),
                description=label,
                detail=", ".join(detail),
            )
            if job["state"] in ("succeeded", "failed", "canceled"):
                return dict(job)
            time.sleep(0.5)


def _error_text(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        return f"{err['message']} (field {err['field']})" if err.get("field") else err["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}: {r.text[:200]}"


def _follow(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {i: progress.add_task(f"{i[-8:]} queued", total=1.0) for i in ids}
        while len(done) < len(ids):
            for job_id in ids:
                if job_id in done:
                    continue
                job = client.get(f"/v1/jobs/{job_id}").json()
                label = (
                    job["state"]
                    if job["state"] != "queued" or not job.get("wait_reason")
                    else f"queued: {job['wait_reason']}"
                )
                progress.update(
                    tasks[job_id],
                    completed=job["progress"]["fraction"],
                    description=f"{job_id[-8:]} {label}"[:80],
                )
                if job["state"] in ("succeeded", "failed", "canceled"):
                    done[job_id] = job
            if len(done) < len(ids):
                time.sleep(0.25)
    return [done[i] for i in ids]


def _save_outputs(server: str, headers: dict[str, str], jobs: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with httpx.Client(headers=headers, timeout=60, follow_redirects=True) as client:
        for job in jobs:
            for o in job["outputs"]:
                ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
                    o["content_type"], "bin"
                )
                path = out / f"{job['id']}-{o['index']}.{ext}"
                path.write_bytes(client.get(o["url"]).raise_for_status().content)
                saved.append(path)
    return saved


def _register_extras() -> None:
    from sdfleet.bench.cli import register
    from sdfleet.demo.cli import demo_app

    register(app)
    app.add_typer(demo_app, name="demo")


def main() -> None:
    _register_extras()
    app()
