"""What the LoRA trainer is made of besides the training loop: precision, the run's result, cached
samples, step-speed averaging, guarded callbacks, file-safe names and a forked RNG."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from sdfleet.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Precision:
    """How tensors are kept and computed: frozen weights' dtype, autocast dtype, grad scaler or not."""

    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    grad_scaler: bool
    label: str
    """``no``, ``fp16`` or ``bf16`` (kohya's ``ss_mixed_precision``)."""


def resolve_precision(device: torch.device, setting: str) -> Precision:
    """fp32 on the CPU (and anything but CUDA); on CUDA bf16 when supported (``auto``), fp16, or none."""
    if device.type != "cuda" or setting == "no":
        return Precision(torch.float32, None, False, "no")
    bf16_ok = torch.cuda.is_bf16_supported()
    if setting == "bf16" or (setting == "auto" and bf16_ok):
        if not bf16_ok:
            raise ValidationError("this GPU does not support bf16", field="mixed_precision")
        return Precision(torch.bfloat16, torch.bfloat16, False, "bf16")
    return Precision(torch.float16, torch.float16, True, "fp16")


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished run produced."""

    lora_path: Path
    """The kohya-format ``.safetensors`` LoRA."""
    name: str
    arch: str
    steps: int
    resumed_from: int | None
    final_loss: float
    seconds: float
    """Wall time of this run (this worker's share when resumed)."""
    it_per_s: float
    metadata: dict[str, str]
    checkpoints: list[Path] = field(default_factory=list)
    """Local checkpoint files still on disk, oldest first."""
    class_images: list[Path] = field(default_factory=list)


@dataclass(slots=True)
class Sample:
    """A cached training sample: latent distribution, prompt, SDXL time ids."""

    mean: torch.Tensor
    std: torch.Tensor
    prompt: str
    time_ids: torch.Tensor | None


@dataclass(slots=True)
class Encoder:
    """A text encoder being trained or used: its pipeline component name, module and tokenizer."""

    component: str
    model: Any
    tokenizer: Any


class Speed:
    """Steps per second as an exponential moving average of step times."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def add(self, seconds: float) -> float:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds
        return 1.0 / self.seconds if self.seconds > 0 else 0.0


class CallbackFailed(Exception):
    """A caller's callback raised: its exception passes through :meth:`LoraTrainer.run` unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(callback: _F | None) -> _F | None:
    """``callback`` wrapped so that what it raises reaches the caller as :class:`CallbackFailed`."""
    if callback is None:
        return None

    def call(*args: Any) -> Any:
        try:
            return callback(*args)
        except Exception as exc:
            raise CallbackFailed(exc) from exc

    return cast(_F, call)


def safe_name(name: str) -> str:
    """``name`` as a file name (word characters, dots and dashes)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "lora"


def fork_rng(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Torch's RNG (and every CUDA device's) forked: what runs inside does not move the outer stream."""
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)
