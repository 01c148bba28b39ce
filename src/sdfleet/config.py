"""Settings (pydantic-settings). Built once by the composition root and passed down.

Every field can be set from the environment with the ``SDFLEET_`` prefix, e.g.
``SDFLEET_DATABASE_URL``, ``SDFLEET_LEASE_SECONDS``. Nested limits use ``__``:
``SDFLEET_LIMITS__MAX_STEPS=150``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the embedded profile keeps its database, blobs and secrets."""
    return Path.home() / ".local" / "share" / "sdfleet"


class Limits(BaseModel):
    """Validation limits enforced at the edge, before a job is stored."""

    max_width: int = 2048
    max_height: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_n_iter: int = 16
    max_images_per_job: int = 64
    max_prompt_chars: int = 8000
    max_body_bytes: int = 32 * 1024 * 1024
    max_jobs_per_batch: int = 1000
    max_upload_bytes: int = 256 * 1024 * 1024
    max_inline_output_bytes: int = 512 * 1024
    max_priority: int = 100
    max_input_pixels: int = Field(
        default=4096 * 4096,
        description="Largest init image or mask (width × height), checked from its header before decoding",
    )
    max_input_frames: int = Field(default=4, ge=1, description="Most frames an input image may have")
    max_upscale_pixels: int = Field(
        default=8192 * 8192,
        description="Largest result of an upscale job (width × height), checked at submit",
    )
    max_input_images: int = Field(default=16, description="Most init images of one generation job")
    max_train_image_pixels: int = Field(
        default=7000 * 7000, description="Largest training image or /v1/inputs upload (width × height)"
    )
    max_labels: int = 32
    max_label_key_chars: int = 64
    max_label_value_chars: int = 256
    max_styles: int = 32
    max_style_chars: int = 200
    max_loras: int = 32
    max_controlnet_units: int = Field(default=4, ge=0, le=16, description="Most ControlNet units of one job")
    max_name_chars: int = Field(
        default=200, description="Sampler, scheduler, model, VAE, upscaler and refiner names"
    )
    max_json_depth: int = Field(
        default=32, ge=2, description="Deepest nesting of arrays/objects a request body may have"
    )
    # LoRA training jobs (train_lora)
    max_train_steps: int = 20_000
    max_train_resolution: int = 1024
    max_train_images: int = 200
    max_train_rank: int = 128
    max_train_batch_size: int = 8
    max_train_image_bytes: int = 32 * 1024 * 1024


class Quotas(BaseModel):
    """Per-tenant quotas and rate limits: the defaults of every tenant (an admin overrides them per
    tenant with ``PATCH /v1/admin/tenants/{id}`` or ``sdfleet tenants set``). ``None`` is unlimited.

    Enforced in the job store, so every orchestrator replica shares them: a token bucket per tenant
    debited in the submit's own transaction."""

    enabled: bool = Field(default=True, description="Enforce quotas and rate limits at submit")
    rate: float | None = Field(
        default=50.0, gt=0, description="Jobs a tenant may submit per second, on average (bucket refill)"
    )
    burst: float = Field(
        default=5000.0,
        ge=1,
        description="Jobs a tenant may submit at once (bucket size; a batch costs its size)",
    )
    max_concurrent: int | None = Field(
        default=10_000, ge=1, description="Queued + running jobs a tenant may have at once"
    )
    gpu_seconds_per_day: float | None = Field(
        default=None, gt=0, description="Estimated GPU seconds a tenant may submit per day (a sliding bucket)"
    )
    max_job_gpu_seconds: float | None = Field(
        default=None, gt=0, description="Largest single job, in estimated GPU seconds"
    )
    weight: float = Field(
        default=1.0, gt=0, le=1000, description="Fair-share weight: claims pick tenants round-robin by it"
    )
    fair_share_memory_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long fair share remembers the jobs a tenant was handed (decay time constant)",
    )
    # pricing: GPU seconds per megapixel-step, until the fleet has recorded engine time of similar jobs
    default_seconds_per_mpix_step: float = Field(
        default=0.2, gt=0, description="Estimated GPU seconds per megapixel per step, before history exists"
    )
    default_train_seconds_per_mpix_step: float = Field(
        default=0.6, gt=0, description="The same for training steps (forward and backward)"
    )
    cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a replica trusts its copy of a tenant's limits"
    )


class IpLimit(BaseModel):
    """A loose in-process limit per client address in front of everything, against floods of
    unauthenticated requests (each replica counts on its own; the real quotas are per tenant)."""

    enabled: bool = True
    rate: float = Field(default=200.0, gt=0, description="Requests per second per address, on average")
    burst: float = Field(default=2000.0, ge=1, description="Requests per address at once")
    max_addresses: int = Field(default=100_000, ge=1, description="Addresses tracked before the oldest go")
    exempt_loopback: bool = Field(default=True, description="Never limit 127.0.0.1 / ::1")


class Settings(BaseSettings):
    """Everything the orchestrator needs. Workers have their own :class:`WorkerSettings`."""

    model_config = SettingsConfigDict(env_prefix="SDFLEET_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 7860
    public_url: str | None = Field(
        default=None, description="Base URL clients and workers use to reach this server (for links)."
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    blob_url: str | None = None
    auto_migrate: bool = Field(
        default=True, description="Migrate the schema at start (else refuse if behind)"
    )
    database_pool_size: int = 10
    allow_pickle: bool = Field(
        default=False, description="Accept pickle checkpoints (.ckpt/.pt/.bin): unsafe"
    )
    auth: str = Field(default="auto", description="auto | required | off (off only on loopback)")
    secret_key: str | None = Field(default=None, description="HMAC key for signed blob URLs")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (or addresses) requests may name in their Host header, besides the loopback "
        "names, the bind address and public_url's host; '*.example.com' matches subdomains, '*' any host. "
        "Comma-separated in SDFLEET_ALLOWED_HOSTS. Empty on a non-loopback bind: any host.",
    )
    public_metrics: bool = Field(
        default=False,
        description="Serve /metrics without a key even when keys exist (only behind a private network); "
        "otherwise Prometheus scrapes with an admin or 'metrics' key as a bearer token",
    )

    # leases and the job lifecycle
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_failures: int = 3
    max_interruptions: int = 10
    claim_max_wait: float = 30.0
    claim_max_jobs: int = 32
    worker_offline_after: float = 90.0
    unservable_after: float = 600.0
    quarantine_failures: int = 3
    quarantine_window: float = 600.0
    quarantine_seconds: float = 3600.0
    reaper_interval: float = 1.0
    poll_seconds: float = Field(
        default=5.0, description="Long polls (claims, event streams) re-check the store this often"
    )
    event_retention_seconds: float = 7 * 24 * 3600.0
    progress_event_min_interval: float = 0.5

    # cache-aware claims (DESIGN.md §3): prefer jobs whose models are warm on the claiming worker
    affinity_enabled: bool = Field(
        default=True, description="Rank claims by the worker's warm models (off: first come, first served)"
    )
    affinity_max_wait_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="A job queued this long is taken by the next free worker, warm or not (aging bound)",
    )
    affinity_window: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Oldest claimable jobs a claim scores (the rest wait their turn)",
    )

    # webhooks
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 64  # deliveries held at once by one replica (in flight + queued)
    webhook_per_destination: int = 4  # in flight at once to one scheme://host:port
    webhook_max_attempts: int = 12
    webhook_backoff_base: float = 2.0
    webhook_backoff_max: float = 3600.0
    allow_private_webhooks: bool = False

    # observability
    log_level: str = "info"
    access_log: bool = False

    limits: Limits = Field(default_factory=Limits)
    quotas: Quotas = Field(default_factory=Quotas)
    ip_limit: IpLimit = Field(default_factory=IpLimit)

    # the AUTOMATIC1111-compatible API (/sdapi/v1, /internal)
    a1111_api_auth: str | None = Field(
        default=None,
        description="HTTP Basic users for the A1111 routes, as A1111's --api-auth: 'user:pass[,user2:pass2]'; "
        "each user is its own tenant (a1111-<user>)",
    )
    a1111_request_timeout: float = Field(
        default=600.0,
        gt=0,
        description="How long a txt2img/img2img call waits for its job before canceling it (seconds)",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",")]
        if isinstance(value, list):
            hosts = [str(h).strip().lower().rstrip(".") for h in value]
            bad = [
                h
                for h in hosts
                if h and ("/" in h or " " in h or (h.count("*") and h != "*" and not h.startswith("*.")))
            ]
            if bad:
                raise ValueError(
                    f"allowed_hosts entries are host names like 'sd.example.com' or '*.example.com', not {bad[0]!r}"
                )
            return [h for h in hosts if h]
        return value

    def host_names(self) -> tuple[frozenset[str], tuple[str, ...], bool]:
        """What the Host header may name: (exact names, ``*.`` suffixes, any host at all).

        The configured ``allowed_hosts``, ``public_url``'s host, the bind address itself and the loopback
        names. With nothing configured on a non-loopback bind, any host (keys are required there)."""
        exact = {h for h in self.allowed_hosts if not h.startswith("*")}
        suffixes = tuple(h[1:] for h in self.allowed_hosts if h.startswith("*."))
        anything = "*" in self.allowed_hosts
        if self.public_url:
            public = urlsplit(self.public_url).hostname
            if public:
                exact.add(public.lower().rstrip("."))
        if self.host not in ("0.0.0.0", "::", ""):
            exact.add(self.host.lower())
        exact |= {"localhost", "127.0.0.1", "::1"}  # names a rebinding page cannot take over
        suffixes += (".localhost",)
        if not self.binds_loopback() and not self.allowed_hosts:
            anything = True
        return frozenset(exact), suffixes, anything

    @field_validator("a1111_api_auth")
    @classmethod
    def _check_a1111_api_auth(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_basic_users(value)
            return value
        return None

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sdfleet.db'}"

    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{self.data_dir / 'blobs'}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def binds_loopback(self) -> bool:
        return is_loopback_host(self.host)


def parse_basic_users(spec: str) -> dict[str, str]:
    """``user:pass[,user2:pass2]`` (A1111's ``--api-auth``) → ``{user: password}``.

    Like A1111, entries are split on ``,`` and each on its one ``:``, so passwords cannot contain either.
    """
    users: dict[str, str] = {}
    for entry in spec.split(","):
        user, sep, password = entry.strip().partition(":")
        if not sep or not user or not password or ":" in password:
            raise ValueError("a1111_api_auth must look like 'user:password[,user2:password2]'")
        users[user] = password
    return users


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WorkerSettings(BaseSettings):
    """Settings of one GPU worker process (``sdfleet worker``)."""

    model_config = SettingsConfigDict(env_prefix="SDFLEET_WORKER_", extra="ignore")

    server: str = "http://127.0.0.1:7860"
    token: str = ""
    name: str | None = None
    engine: str = "diffusers"
    model: str | None = None
    device: str | None = None
    price_per_hour: float = 0.0
    max_pixels: int = 1024 * 1024 * 4
    prefetch: int = 1
    claim_wait: float = 20.0
    heartbeat_seconds: float | None = None
    upload_concurrency: int = 4
    shutdown_grace: float = 30.0
    fake_step_seconds: float = 0.02
    pipelined: bool = True
    allow_pickle: bool = False
    memory_budget_mb: int | None = None

    # the model cache (sdfleet.models): registry models fetched on demand, kept by sha256
    cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir(), description="Where fetched models are kept"
    )
    cache_gb: float = Field(default=50.0, gt=0, description="Disk budget of the model cache (GB)")
    hf_token: str | None = Field(default=None, description="Hugging Face token for hf:// sources")
    civitai_token: str | None = Field(default=None, description="Civitai API token for civitai:// sources")
    allow_private_model_urls: bool = Field(
        default=False,
        description="Let model sources point at private, loopback or link-local addresses (trusted networks)",
    )

    gpu_work_on_cpu: bool = Field(
        default=False,
        description="Without a GPU, still take work meant for GPU-class workers (RRDB upscalers): slow, "
        "but a one-box deployment with no GPU has no one else to give it to",
    )
    upscale_tile: int | None = Field(
        default=None,
        ge=32,
        le=2048,
        description="Upscaler tile side in px (default: from free device memory)",
    )

    # annotate jobs (ControlNet preprocessors): a worker of role "annotate" runs only those, on the CPU,
    # with no generation engine (no torch); generation workers run the model-free modules too
    role: Literal["generate", "annotate"] = Field(
        default="generate",
        description="generate: an engine's jobs (and model-free annotate jobs); annotate: annotate jobs only",
    )
    annotate_weights: bool | None = Field(
        default=None,
        description="Run annotate modules with weights (ONNX, needs onnxruntime); default: on annotate workers",
    )

    # LoRA training jobs (train_lora; engines that can train advertise the kind)
    train: bool = Field(default=True, description="Take train_lora jobs when the engine can train")
    train_dir: Path | None = Field(
        default=None, description="Scratch space of training jobs (default: a temporary directory)"
    )
    train_threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads while training (default: torch's own)"
    )


def default_cache_dir() -> Path:
    """Where a worker keeps fetched models: ``$XDG_CACHE_HOME/sdfleet/models`` (``~/.cache/…``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdfleet" / "models"
