"""Loaded checkpoints: loading from a folder or a single file, the LRU cache under a memory budget,
LoRA adapters and VAE overrides.

One :class:`LoadedModel` per checkpoint holds one diffusers pipeline object as the owner of the shared
components (UNet, VAE, text encoders, tokenizers); the engine drives txt2img, img2img and inpainting
itself on those components, so every kind of job on a checkpoint shares them by construction. LoRAs are
loaded once as named peft adapters (``load_lora_weights(..., adapter_name=)``) and switched per job with
``set_adapters``; a job without LoRAs disables them, which gives exactly the base model's output.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdfleet.engine.sd import checkpoints
from sdfleet.engine.sd.checkpoints import SD2, SDXL, SDXL_REFINER, HashCache
from sdfleet.engine.sd.prompts import PromptEncoder
from sdfleet.engine.sd.tokenizer import make_tokenizer
from sdfleet.errors import ConfigError, EngineError, ValidationError

log = logging.getLogger("sdfleet.engine")

Lookup = Mapping[str, Path] | Callable[[str], Path | None]
"""How the engine finds a named file: a ``{name: path}`` mapping or a resolver returning None when unknown."""


def lookup(table: Lookup | None, name: str) -> Path | None:
    """Resolve ``name`` through a mapping or a resolver callable."""
    if table is None:
        return None
    if callable(table):
        found = table(name)
        return Path(found) if found is not None else None
    value = table.get(name)
    return Path(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """One LoRA wanted by a job: registry name, text-encoder and UNet weights."""

    name: str
    te_weight: float
    unet_weight: float


@dataclass(slots=True)
class LoadedModel:
    """A checkpoint in memory with its pipeline, prompt encoder and adapters."""

    key: str
    name: str
    path: Path
    arch: str
    pipe: Any
    sha256: str
    encoder: PromptEncoder
    scheduler_config: dict[str, Any]
    size_bytes: int
    device: Any
    dtype: Any
    load_seconds: float
    vae: Any = None
    adapters: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    """LoRA name → (adapter id, file mtime_ns, A1111 short hash)."""
    active: tuple[tuple[str, float, float], ...] = ()
    vaes: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """VAE name → (module, short hash)."""

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def sdxl(self) -> bool:
        return self.arch in (SDXL, SDXL_REFINER)


def auto_device(device: str | None) -> tuple[torch.device, torch.dtype]:
    """cuda with bf16 (fp16 without bf16 support) when present, else cpu with fp32; ``device`` overrides."""
    if device:
        dev = torch.device(device)
    else:
        dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for but CUDA is not available", field="device")
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def _size_of(pipe: Any) -> int:
    total = 0
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total


def _v_prediction_test(unet: Any, device: Any) -> bool:
    """A1111's check for SD 2.x v-prediction: v models push a constant input strongly negative."""
    with torch.inference_mode():
        dim = int(unet.config.cross_attention_dim)
        x = torch.ones((1, int(unet.config.in_channels), 8, 8), device=device, dtype=unet.dtype) * 0.5
        cond = torch.ones((1, 2, dim), device=device, dtype=unet.dtype) * 0.5
        out = unet(x, torch.tensor([999], device=device), encoder_hidden_states=cond, return_dict=False)[0]
        return bool(((out - x).float().mean() < -1).item())


class ModelStore:
    """Loads checkpoints and keeps the most recently used ones under a memory budget (LRU)."""

    def __init__(
        self,
        *,
        device: torch.device,
        dtype: torch.dtype,
        budget_bytes: int,
        allow_pickle: bool,
        hashes: HashCache,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.budget_bytes = budget_bytes
        self.allow_pickle = allow_pickle
        self.hashes = hashes
        self.loads = 0
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ cache
    def get(self, path: Path, name: str | None = None) -> LoadedModel:
        """The loaded model for ``path`` (loading, and evicting least recently used ones, as needed)."""
        key = str(path.resolve())
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = self._load(path, name or path.stem if path.is_file() else name or path.name)
            self._models[key] = model
            self._evict(keep=key)
            return model

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, most recently used first."""
        with self._lock:
            return list(reversed(self._models.values()))

    def _evict(self, keep: str) -> None:
        while len(self._models) > 1 and sum(m.size_bytes for m in self._models.values()) > self.budget_bytes:
            key, victim = next(iter(self._models.items()))
            if key == keep:
                self._models.move_to_end(key)
                continue
            del self._models[key]
            log.info("model.evicted name=%s bytes=%d", victim.name, victim.size_bytes)
            del victim
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ loading
    def _load(self, path: Path, name: str) -> LoadedModel:
        if not path.exists():
            raise ValidationError(f"model {name!r}: {path} does not exist", field="model")
        started = time.monotonic()
        try:
            if path.is_dir():
                arch = checkpoints.arch_of_folder(path)
                pipe = self._from_folder(path, arch)
                sha256 = checkpoints.folder_sha256(path, self.hashes)
            else:
                checkpoints.check_format(path, allow_pickle=self.allow_pickle)
                arch, pipe = self._from_file(path)
                sha256 = self.hashes.sha256(path)
        except (ValidationError, ConfigError):
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(f"out of memory loading {name}: {exc}", retryable=True) from exc
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EngineError(f"cannot load model {name!r}: {exc}", retryable=False) from exc
        pipe.to(self.device)
        if self.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
            pipe.vae.to(torch.float32)
        scheduler_config = dict(pipe.scheduler.config)
        if arch == SD2 and not path.is_dir():
            if _v_prediction_test(pipe.unet, self.device):
                scheduler_config["prediction_type"] = "v_prediction"
            else:
                scheduler_config["prediction_type"] = "epsilon"
        self.loads += 1
        model = LoadedModel(
            key=str(path.resolve()),
            name=name,
            path=path,
            arch=arch,
            pipe=pipe,
            sha256=sha256,
            encoder=PromptEncoder(arch, pipe, self.device, self.dtype),
            scheduler_config=scheduler_config,
            size_bytes=_size_of(pipe),
            device=self.device,
            dtype=self.dtype,
            load_seconds=time.monotonic() - started,
        )
        model.vae = pipe.vae
        log.info(
            "model.loaded name=%s arch=%s seconds=%.2f bytes=%d hash=%s",
            name,
            arch,
            model.load_seconds,
            model.size_bytes,
            model.short_hash,
        )
        return model

    def _pipeline_class(self, arch: str) -> Any:
        import diffusers

        return {
            SDXL: diffusers.StableDiffusionXLPipeline,
            SDXL_REFINER: diffusers.StableDiffusionXLImg2ImgPipeline,
        }.get(arch, diffusers.StableDiffusionPipeline)

    def _from_folder(self, folder: Path, arch: str) -> Any:
        cls = self._pipeline_class(arch)
        extra: dict[str, Any] = {}
        if arch not in (SDXL, SDXL_REFINER):
            extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        return cls.from_pretrained(str(folder), dtype=self.dtype, local_files_only=True, **extra)

    def _from_file(self, path: Path) -> tuple[str, Any]:
        if path.suffix.lower() == ".safetensors":
            header = checkpoints.read_header(path)
            info = checkpoints.detect_arch(header.shapes)
            embedded = checkpoints.embedded_configs(header.metadata)
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            info = checkpoints.detect_arch(
                {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
            )
            embedded = None
            del state
        folder = checkpoints.config_folder(info.arch, embedded=embedded, in_channels=info.in_channels)
        pad1, pad2 = checkpoints.tokenizer_pads(info.arch, embedded)
        kwargs: dict[str, Any] = {}
        if pad1 is not None:
            kwargs["tokenizer"] = make_tokenizer(pad1)
        if pad2 is not None:
            kwargs["tokenizer_2"] = make_tokenizer(pad2)
        if info.arch == SDXL_REFINER:
            kwargs.update(text_encoder=None, tokenizer=None)
        elif info.arch not in (SDXL,):
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        cls = self._pipeline_class(info.arch)
        pipe = cls.from_single_file(
            str(path), config=str(folder), local_files_only=True, dtype=self.dtype, **kwargs
        )
        return info.arch, pipe

    # ------------------------------------------------------------------ LoRA
    def apply_loras(self, model: LoadedModel, wanted: Sequence[LoraSpec], files: Mapping[str, Path]) -> None:
        """Make exactly ``wanted`` active on ``model`` (loading new adapters once; none → adapters off)."""
        with self._lock:
            for spec in wanted:
                path = files[spec.name]
                mtime = path.stat().st_mtime_ns
                known = model.adapters.get(spec.name)
                if known is not None and known[1] == mtime:
                    continue
                if known is not None:
                    model.pipe.delete_adapters(known[0])
                    model.active = ()
                adapter = self._adapter_id(spec.name, model)
                checkpoints.check_format(path, allow_pickle=self.allow_pickle, field="loras")
                try:
                    model.pipe.load_lora_weights(str(path), adapter_name=adapter)
                except (ValueError, KeyError, RuntimeError, OSError) as exc:
                    raise ValidationError(
                        f"LoRA {spec.name!r} ({path.name}) does not fit model {model.name!r}: {exc}",
                        field="loras",
                    ) from exc
                lora_hash = _lora_short_hash(path)
                model.adapters[spec.name] = (adapter, mtime, lora_hash)
                log.info("lora.loaded name=%s model=%s hash=%s", spec.name, model.name, lora_hash)
            state = tuple((s.name, s.te_weight, s.unet_weight) for s in wanted)
            if state == model.active:
                return
            if not wanted:
                if model.adapters:
                    model.pipe.disable_lora()
            else:
                model.pipe.enable_lora()
                parts = model.pipe.get_list_adapters()
                names, weights = [], []
                for spec in wanted:
                    adapter = model.adapters[spec.name][0]
                    per_component = {
                        component: (spec.unet_weight if component == "unet" else spec.te_weight)
                        for component, adapters in parts.items()
                        if adapter in adapters
                    }
                    names.append(adapter)
                    weights.append(per_component)
                model.pipe.set_adapters(names, adapter_weights=weights)
            model.active = state
            model.encoder.invalidate()

    @staticmethod
    def _adapter_id(name: str, model: LoadedModel) -> str:
        base = re.sub(r"\W", "_", name) or "lora"
        used = {a for a, _, _ in model.adapters.values()}
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    # ------------------------------------------------------------------ VAE
    def vae(self, model: LoadedModel, name: str, path: Path) -> tuple[Any, str]:
        """The VAE at ``path`` for ``model`` (loaded once per model), and its short hash."""
        with self._lock:
            if name in model.vaes:
                return model.vaes[name]
            diffusers: Any = importlib.import_module("diffusers")
            try:
                if path.is_dir():
                    vae = diffusers.AutoencoderKL.from_pretrained(
                        str(path), dtype=self.dtype, local_files_only=True
                    )
                    vae_hash = checkpoints.folder_sha256(path, self.hashes)[:10]
                else:
                    checkpoints.check_format(path, allow_pickle=self.allow_pickle, field="vae")
                    folder = checkpoints.config_folder(model.arch)
                    vae = diffusers.AutoencoderKL.from_single_file(
                        str(path),
                        config=str(folder),
                        subfolder="vae",
                        local_files_only=True,
                        dtype=self.dtype,
                    )
                    vae_hash = self.hashes.short(path)
            except (ValidationError, ConfigError):
                raise
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ValidationError(f"VAE {name!r} cannot be loaded: {exc}", field="vae") from exc
            vae.to(self.device)
            if self.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
                vae.to(torch.float32)
            model.vaes[name] = (vae, vae_hash)
            return model.vaes[name]


def _lora_short_hash(path: Path) -> str:
    """A1111's "Lora hashes" value: ``sshs_model_hash`` metadata or the addnet hash, 12 hex digits."""
    if path.suffix.lower() == ".safetensors":
        try:
            meta = checkpoints.read_header(path).metadata
        except ValidationError:
            meta = {}
        if meta.get("sshs_model_hash"):
            return meta["sshs_model_hash"][:12]
    return checkpoints.addnet_hash(path)[:12]


def default_budget(device: torch.device) -> int:
    """Memory budget for loaded checkpoints: 85% of the GPU's memory, or half of the machine's RAM."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.85)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def names(items: Iterable[LoadedModel]) -> list[str]:
    """``loaded_models()`` entries: checkpoint names, then ``lora:``/``vae:`` entries of each."""
    out: list[str] = []
    for model in items:
        out.append(model.name)
        out += [f"lora:{n}" for n in model.adapters]
        out += [f"vae:{n}" for n in model.vaes]
    return out
