"""Checkpoint files without torch: hashes, safetensors headers, architecture detection, shipped configs.

Everything here reads files only; nothing imports torch, so it can run in the worker's prefetch path.

- Hashes follow A1111: "Model hash" is the first 10 hex digits of the file's sha256, LoRA hashes are the
  first 12 of the "addnet" hash (sha256 of a safetensors file after its header). Whole-file hashes are
  computed once per (path, size, mtime) and kept in memory and in a ``<file>.sha256`` sidecar when the
  folder is writable.
- :func:`detect_arch` tells SD 1.x, SD 2.x, SDXL base and SDXL refiner apart from the key names and
  tensor shapes of an original (LDM/SGM) single-file checkpoint.
- :func:`config_folder` materialises the configs-only diffusers folder for an architecture (shipped
  under ``sdfleet/engine/configs``), patched for the checkpoint (inpainting UNet, v-prediction) or
  replaced by configs embedded in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdfleet.domain import ARCH_RESOLUTION
from sdfleet.errors import ConfigError, ValidationError
from sdfleet.filehash import read_sidecar, sha256_file, write_sidecar

log = logging.getLogger("sdfleet.engine")

SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"
ARCHS = (SD1, SD2, SDXL, SDXL_REFINER)
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
SAFE_SUFFIXES = frozenset({".safetensors"})
CONFIG_METADATA_KEY = "sdfleet.diffusers_config"
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


# ------------------------------------------------------------------------------------------------ hashes


class HashCache:
    """sha256 of files, computed once per (path, size, mtime); also persisted in ``<file>.sha256``."""

    def __init__(self, *, sidecars: bool = True) -> None:
        self.sidecars = sidecars
        self._lock = threading.Lock()
        self._memory: dict[tuple[str, int, int], str] = {}

    def sha256(self, path: Path) -> str:
        """The full sha256 (hex) of ``path``."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._memory.get(key)
        if cached is not None:
            return cached
        digest = self._read_sidecar(path, stat.st_size, stat.st_mtime_ns) or sha256_file(path)
        with self._lock:
            self._memory[key] = digest
        self._write_sidecar(path, digest, stat.st_size, stat.st_mtime_ns)
        return digest

    def short(self, path: Path) -> str:
        """A1111's "Model hash": the first 10 hex digits of the sha256."""
        return self.sha256(path)[:10]

    def _read_sidecar(self, path: Path, size: int, mtime_ns: int) -> str | None:
        return read_sidecar(path, size, mtime_ns) if self.sidecars else None

    def _write_sidecar(self, path: Path, digest: str, size: int, mtime_ns: int) -> None:
        if not self.sidecars:
            return
        try:
            write_sidecar(path, digest, size, mtime_ns)
        except OSError:
            log.debug("hash.sidecar_unwritable path=%s", path)


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash: sha256 of a safetensors file after its header (whole file otherwise)."""
    if path.suffix.lower() != ".safetensors":
        return sha256_file(path)
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    return sha256_file(path, 8 + length)


def folder_sha256(folder: Path, cache: HashCache) -> str:
    """A stable hash of a diffusers folder: sha256 over its weight files' relative paths and hashes."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in (".safetensors", ".bin") and not file.name.startswith("."):
            digest.update(f"{file.relative_to(folder).as_posix()}:{cache.sha256(file)}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ headers


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """Tensor names with shapes and dtypes, and the ``__metadata__`` strings of a safetensors file."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]


def read_header(path: Path) -> SafetensorsHeader:
    """Read a safetensors header without loading any tensor; :class:`ValidationError` if it is not one."""
    try:
        with path.open("rb") as handle:
            raw_length = handle.read(8)
            if len(raw_length) != 8:
                raise ValueError("file too short")
            (length,) = struct.unpack("<Q", raw_length)
            if length > 100 * 1024 * 1024:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"{path.name} is not a readable safetensors file: {exc}", field="model"
        ) from exc
    metadata = header.pop("__metadata__", None) or {}
    shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
    dtypes = {k: str(v["dtype"]) for k, v in header.items()}
    return SafetensorsHeader(shapes, dtypes, {str(k): str(v) for k, v in metadata.items()})


def check_format(path: Path, *, allow_pickle: bool, field: str = "model") -> None:
    """Refuse pickle checkpoints unless the operator allowed them; refuse unknown suffixes."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ConfigError(
            f"{path.name}: pickle checkpoints ({', '.join(sorted(PICKLE_SUFFIXES))}) can run arbitrary code "
            "when loaded and are refused; convert it to .safetensors, or start the engine with "
            "allow_pickle=True if you trust the file",
            field=field,
        )
    if suffix not in PICKLE_SUFFIXES and suffix not in SAFE_SUFFIXES:
        raise ValidationError(f"{path.name}: unsupported checkpoint format {suffix!r}", field=field)


# ------------------------------------------------------------------------------------------------ archs


@dataclass(frozen=True, slots=True)
class ArchInfo:
    """What a checkpoint is: architecture, UNet input channels (9 = inpainting), prediction if known."""

    arch: str
    in_channels: int = 4
    prediction_type: str | None = None


def detect_arch(shapes: Mapping[str, Sequence[int]]) -> ArchInfo:
    """Tell the architecture of an original-layout checkpoint from its keys and shapes.

    SDXL base has ``conditioner.embedders.0`` (OpenAI CLIP) and ``.1`` (OpenCLIP bigG); the refiner only
    ``conditioner.embedders.0.model`` (OpenCLIP); SD 2.x has ``cond_stage_model.model`` (OpenCLIP ViT-H);
    SD 1.x has ``cond_stage_model.transformer`` (OpenAI CLIP ViT-L).
    """
    keys = set(shapes)
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None:
        raise ValidationError(
            "not a Stable Diffusion checkpoint: it has no UNet (model.diffusion_model.*)", field="model"
        )
    in_channels = int(conv_in[1])

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("conditioner.embedders.1.model."):
        return ArchInfo(SDXL, in_channels)
    if has("conditioner.embedders.0.model."):
        return ArchInfo(SDXL_REFINER, in_channels)
    if has("cond_stage_model.model."):
        return ArchInfo(SD2, in_channels)
    if has("cond_stage_model.transformer."):
        return ArchInfo(SD1, in_channels, "epsilon")
    raise ValidationError(
        "unknown checkpoint architecture: no text encoder keys of SD 1.x, SD 2.x or SDXL", field="model"
    )


def arch_of_folder(folder: Path) -> str:
    """The architecture of a diffusers folder, from its model_index and text-encoder configs."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"{folder} is not a diffusers folder (model_index.json: {exc})", field="model"
        ) from exc
    te1 = index.get("text_encoder") or [None, None]
    te2 = index.get("text_encoder_2") or [None, None]
    if te2[0] is not None:
        return SDXL if te1[0] is not None else SDXL_REFINER
    try:
        te_config = json.loads((folder / "text_encoder" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{folder}: unreadable text_encoder/config.json: {exc}", field="model") from exc
    return SD2 if te_config.get("hidden_act") == "gelu" else SD1


# ------------------------------------------------------------------------------------------------ configs

_materialise_lock = threading.Lock()
_config_root: Path | None = None


def _root() -> Path:
    global _config_root
    if _config_root is None:
        _config_root = Path(tempfile.mkdtemp(prefix="sdfleet-configs-"))
    return _config_root


def embedded_configs(metadata: Mapping[str, str], key: str = CONFIG_METADATA_KEY) -> dict[str, Any] | None:
    """Diffusers configs embedded in a single file's metadata (under ``key``) by our tools, if any."""
    raw = metadata.get(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("checkpoint.bad_embedded_config")
        return None
    return value if isinstance(value, dict) else None


def config_folder(
    arch: str,
    *,
    embedded: Mapping[str, Any] | None = None,
    in_channels: int = 4,
    prediction_type: str | None = None,
) -> Path:
    """A configs-only diffusers folder for ``from_single_file(config=…)``, materialised once per variant.

    Starts from the shipped folder of ``arch``; ``embedded`` configs (from our own files) replace its
    components; ``in_channels`` and ``prediction_type`` patch the UNet and the scheduler.
    """
    if arch not in ARCHS:
        raise ConfigError(f"no shipped configs for architecture {arch!r}", field="model")
    variant = json.dumps(
        {"arch": arch, "embedded": embedded, "in": in_channels, "pred": prediction_type}, sort_keys=True
    )
    name = hashlib.sha256(variant.encode()).hexdigest()[:16]
    target = _root() / name
    with _materialise_lock:
        if target.exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=_root(), prefix=".staging-"))
        shutil.copytree(CONFIGS_DIR / arch, staging, dirs_exist_ok=True)
        if embedded:
            for component, config in embedded.items():
                if component == "model_index":
                    index = json.loads((staging / "model_index.json").read_text())
                    index.update({k: v for k, v in config.items() if not k.startswith("_")})
                    _write_json(staging / "model_index.json", index)
                elif component.startswith("tokenizer"):
                    continue
                else:
                    file = "scheduler_config.json" if component == "scheduler" else "config.json"
                    # diffusers drops every key listed in ``_use_default_values`` on load; a value set
                    # after construction (a VAE's scaling_factor) stays listed there, so the list goes
                    config = {k: v for k, v in config.items() if k != "_use_default_values"}
                    _write_json(staging / component / file, config)
        if in_channels != 4:
            unet = json.loads((staging / "unet" / "config.json").read_text())
            unet["in_channels"] = in_channels
            _write_json(staging / "unet" / "config.json", unet)
        if prediction_type is not None:
            sched = json.loads((staging / "scheduler" / "scheduler_config.json").read_text())
            sched["prediction_type"] = prediction_type
            _write_json(staging / "scheduler" / "scheduler_config.json", sched)
        os.replace(staging, target)
    return target


def tokenizer_pads(arch: str, embedded: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """Pad tokens of (tokenizer, tokenizer_2): ``<|endoftext|>`` for OpenAI CLIP, ``!`` for OpenCLIP."""
    eos, bang = "<|endoftext|>", "!"
    pads: tuple[str | None, str | None] = {
        SD1: (eos, None),
        SD2: (bang, None),
        SDXL: (eos, bang),
        SDXL_REFINER: (None, bang),
    }[arch]
    if embedded:
        first = embedded.get("tokenizer", {}).get("pad_token") if pads[0] else None
        second = embedded.get("tokenizer_2", {}).get("pad_token") if pads[1] else None
        pads = (first or pads[0], second or pads[1])
    return pads


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True))


def default_arch(model: Path) -> str:
    """The base architecture (sd1, sd2, sdxl) of a checkpoint file or diffusers folder."""
    arch = arch_of_folder(model) if model.is_dir() else detect_arch(read_header(model).shapes).arch
    return SDXL if arch == SDXL_REFINER else arch


def native_resolution(model: Path, arch: str | None = None) -> int | None:
    """The side in pixels a checkpoint was trained at: from the configs embedded in the file when it
    has them (UNet sample size × the VAE's downsampling), else the architecture's usual size."""
    try:
        if model.is_file() and model.suffix.lower() in SAFE_SUFFIXES:
            configs = embedded_configs(read_header(model).metadata)
            if configs and "unet" in configs and "vae" in configs:
                blocks = len(configs["vae"].get("block_out_channels") or (0, 0, 0, 0))
                return int(configs["unet"]["sample_size"]) * int(2 ** (blocks - 1))
    except (OSError, ValidationError, KeyError, TypeError, ValueError):
        log.debug("checkpoint.resolution_unreadable path=%s", model)
    return ARCH_RESOLUTION.get(arch) if arch else None
