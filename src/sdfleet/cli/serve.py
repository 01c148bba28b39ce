"""Running the service: ``serve`` (the orchestrator), ``worker``, ``up`` (both on one box, with a
local worker token and a default model) and ``migrate`` (the database schema)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.panel import Panel

from sdfleet import __version__
from sdfleet.cli.app import (
    BlobOpt,
    DataDirOpt,
    DbOpt,
    EngineOpt,
    HostOpt,
    ModelOpt,
    PortOpt,
    build_settings,
    configure_logging,
    console,
    fail,
    run,
    with_store,
)
from sdfleet.cli.models import with_models
from sdfleet.config import Settings, WorkerSettings
from sdfleet.errors import SdfleetError

# ============================================================================ serve


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
    role: Annotated[
        str,
        typer.Option(
            envvar="SDFLEET_WORKER_ROLE",
            help="generate: run the engine's jobs (and model-free annotate jobs); annotate: a CPU worker that "
            "runs ControlNet preprocessors only, with no engine (needs the [annotators] extra, not torch).",
        ),
    ] = "generate",
    log_level: Annotated[str, typer.Option(envvar="SDFLEET_LOG_LEVEL")] = "info",
) -> None:
    """Run one GPU worker: pull jobs from the orchestrator, generate, upload, report. With ``--role
    annotate``, a CPU worker of ControlNet preprocessors (annotate jobs) only.

    Models that jobs name are fetched from their registry source into the model cache (Hugging Face
    and Civitai tokens: SDFLEET_WORKER_HF_TOKEN, SDFLEET_WORKER_CIVITAI_TOKEN)."""
    from sdfleet.worker.runner import run_worker

    configure_logging(log_level, name or "worker")
    if role not in ("generate", "annotate"):
        raise fail("--role must be generate or annotate")
    settings = WorkerSettings(
        role=role,
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
    run(run_worker(settings))


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
    upscaler: Annotated[
        list[Path],
        typer.Option(
            help="An upscaler file (.safetensors, ESRGAN or Real-ESRGAN Compact) to register; repeatable. "
            "Real-ESRGAN's own files get A1111's names (RealESRGAN_x4plus → 'R-ESRGAN 4x+')."
        ),
    ] = [],  # noqa: B006
    controlnet: Annotated[
        list[Path],
        typer.Option(
            help="A ControlNet, ControlNet Union, T2I-Adapter or IP-Adapter file (.safetensors, original or "
            "diffusers layout) to register under its stem; repeatable. What it is and its SD family are read "
            "from the file."
        ),
    ] = [],  # noqa: B006
    image_encoder: Annotated[
        list[Path],
        typer.Option(
            help="A CLIP vision encoder for IP-Adapters (.safetensors, CLIPVisionModelWithProjection) to "
            "register under its stem; repeatable."
        ),
    ] = [],  # noqa: B006
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
    for path in upscaler:
        _register_upscaler(settings, path.expanduser().resolve())
    for path in controlnet:
        _register_controlnet(settings, path.expanduser().resolve())
    for path in image_encoder:
        _register_image_encoder(settings, path.expanduser().resolve())
    exe = [sys.executable, "-m", "sdfleet"]
    orchestrator = Child("orchestrator", [*exe, "serve"], env)
    worker_children = []
    for i in range(n_workers):
        wenv = {**env, "SDFLEET_WORKER_TOKEN": token}
        if gpus:
            wenv["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        else:  # one box, no GPU: its workers are the only ones there are, so they take GPU-class work too
            wenv.setdefault("SDFLEET_WORKER_GPU_WORK_ON_CPU", "true")
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
        run(with_models(settings, add))


def _register_upscaler(settings: Settings, path: Path) -> None:
    """Put an `up --upscaler` file in the registry (family and scale read from it)."""
    from sdfleet.cli.models import upscaler_name, upscaler_shape
    from sdfleet.domain import ModelKind

    _check_file("--upscaler", path)
    arch, scale = upscaler_shape(path)
    _register_file(settings, path, upscaler_name(path), ModelKind.UPSCALER, arch, f"{arch} ×{scale}", scale)


def _register_controlnet(settings: Settings, path: Path) -> None:
    """Put an `up --controlnet` file in the registry under its stem (the family read from it; a T2I-Adapter
    or an IP-Adapter registers as one)."""
    from sdfleet.cli.models import control_kind, ip_adapter_arch
    from sdfleet.domain import ModelKind
    from sdfleet.engine.sd.checkpoints import read_header

    _check_file("--controlnet", path)
    if path.suffix.lower() == ".safetensors" and any(
        k.startswith("ip_adapter.") for k in read_header(path).shapes
    ):
        arch = ip_adapter_arch(path, ModelKind.IP_ADAPTER)
        _register_file(settings, path, path.stem, ModelKind.IP_ADAPTER, arch, arch)
        return
    kind, arch = control_kind(path)
    _register_file(settings, path, path.stem, ModelKind(kind), arch, f"{arch} {kind}")


def _register_image_encoder(settings: Settings, path: Path) -> None:
    """Put an `up --image-encoder` file in the registry under its stem (its family read from it)."""
    from sdfleet.cli.models import ip_adapter_arch
    from sdfleet.domain import ModelKind

    _check_file("--image-encoder", path)
    arch = ip_adapter_arch(path, ModelKind.IMAGE_ENCODER)
    _register_file(settings, path, path.stem, ModelKind.IMAGE_ENCODER, arch, arch)


def _check_file(option: str, path: Path) -> None:
    if not path.is_file():
        raise fail(f"{option} {path}: no such file")


def _register_file(
    settings: Settings, path: Path, name: str, kind: Any, arch: str, what: str, scale: int | None = None
) -> None:
    """Register a local file given to `up` (hashed now), saying what it is while it hashes."""
    from sdfleet.domain import ModelRecord

    record = ModelRecord(
        name=name,
        kind=kind,
        arch=arch,
        scale=scale,
        source=str(path),
        sha256=None,
        size=None,
        description=f"served by sdfleet up --{kind.value}",
    )

    async def add(ms: Any) -> Any:
        return await ms.add(record, hash_local=True)

    with console.status(f"registering {kind.value} {name} ({what})…"):
        run(with_models(settings, add))


def _local_worker_token(settings: Settings) -> str:
    """The worker key of `up`'s local workers, kept in the data dir (0600) and checked against the
    database at every start: a revoked or unknown one (a fresh database) is replaced."""
    path = settings.data_dir / "worker_token"
    kept = path.read_text().strip() if path.exists() else ""

    from sdfleet.errors import AuthError
    from sdfleet.jobs.keys import KeyService

    async def ensure(store: Any) -> str:
        keys = KeyService(store)
        if kept:
            try:
                if (await keys.verify(kept)).is_worker:
                    return kept
            except AuthError:
                pass
        created = await keys.create("local", ["worker"], name="sdfleet up local workers")
        return created.secret

    secret: str = run(with_store(settings, ensure))
    if secret != kept:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
    return secret


# ============================================================================ migrate and keys


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

    before, after = run(go())
    typer.echo(f"schema {before or 'empty'} → {after} (head {head_revision()})")
