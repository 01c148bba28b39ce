"""Engines: the :class:`~sdfleet.engine.base.Engine` protocol and :func:`load_engine`, the factory
the worker uses. Importing this package never imports torch; engines that need it load it lazily.
"""

from __future__ import annotations

from sdfleet.engine.base import (
    Engine,
    EngineCapabilities,
    GeneratedImage,
    GenerationResult,
    StepInfo,
)
from sdfleet.errors import ConfigError

ENGINE_NAMES = ("diffusers", "fake")

__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "EngineCapabilities",
    "GeneratedImage",
    "GenerationResult",
    "StepInfo",
    "load_engine",
]


def load_engine(name: str, *, model: str | None, device: str | None, fake_step_seconds: float) -> Engine:
    """Build the engine called ``name``. ``fake`` is the test double (tests and fleet simulation)."""
    key = name.strip().lower()
    if key == "fake":
        from sdfleet.engine.fake import FakeEngine

        return FakeEngine(step_seconds=fake_step_seconds, model=model)
    if key == "diffusers":
        raise ConfigError(
            "the diffusers engine is not available yet in this build; start with --engine fake",
            field="engine",
        )
    raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}", field="engine")
