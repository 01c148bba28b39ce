"""Engines: the :class:`~sdfleet.engine.base.Engine` protocol and :func:`load_engine`, the factory
the worker uses. Importing this package never imports torch; engines that need it load it lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sdfleet.engine.base import (
    Engine,
    EngineCapabilities,
    GeneratedImage,
    GenerationResult,
    StepInfo,
)
from sdfleet.errors import ConfigError

ENGINE_NAMES = ("diffusers", "fake")

ModelLookup = Callable[[str, str], Path | None]
"""``lookup(kind, name)`` → the local file of a registry model, or None (see :func:`load_engine`)."""


def _bind(lookup: ModelLookup | None, kind: str) -> Callable[[str], Path | None] | None:
    if lookup is None:
        return None
    return lambda name: lookup(kind, name)


__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "EngineCapabilities",
    "GeneratedImage",
    "GenerationResult",
    "ModelLookup",
    "StepInfo",
    "load_engine",
]


def load_engine(
    name: str,
    *,
    model: str | None,
    device: str | None,
    fake_step_seconds: float,
    allow_pickle: bool = False,
    memory_budget_mb: int | None = None,
    lookup: ModelLookup | None = None,
) -> Engine:
    """Build the engine called ``name``. ``fake`` is the test double (tests and fleet simulation).

    ``lookup(kind, name)`` finds the local file of a registry model (``checkpoint``, ``lora``,
    ``vae``): the worker's model cache fills it for each job."""
    key = name.strip().lower()
    if key == "fake":
        from sdfleet.engine.fake import FakeEngine

        return FakeEngine(step_seconds=fake_step_seconds, model=model, lookup=lookup)
    if key == "diffusers":
        try:
            from sdfleet.engine.sd.engine import DiffusersEngine
        except ImportError as exc:
            raise ConfigError(
                f"the diffusers engine needs the [engine] extra (torch, diffusers, transformers, "
                f"safetensors, peft, accelerate, open-clip-torch): {exc}",
                field="engine",
            ) from exc
        if not model:
            raise ConfigError(
                "the diffusers engine needs --model PATH (a diffusers folder or a .safetensors file)",
                field="model",
            )
        from sdfleet.engine.sd.images import inline_resolver

        budget = memory_budget_mb * 1024 * 1024 if memory_budget_mb else None
        return DiffusersEngine(
            model,
            models=_bind(lookup, "checkpoint"),
            loras=_bind(lookup, "lora"),
            vaes=_bind(lookup, "vae"),
            upscalers=_bind(lookup, "upscaler"),
            controlnets=_bind(lookup, "controlnet"),
            ip_adapters=_bind(lookup, "ip_adapter"),
            image_encoders=_bind(lookup, "image_encoder"),
            device=device,
            allow_pickle=allow_pickle,
            memory_budget_bytes=budget,
            image_resolver=inline_resolver,
        )
    raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}", field="engine")
