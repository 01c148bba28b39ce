"""The engine's narrow door: a validated spec in, images out, progress per step, interruptible.

The engine knows nothing of HTTP, stores or workers. Implementations: ``DiffusersEngine`` (the real
one) and :class:`sdfleet.engine.fake.FakeEngine` (tests and fleet simulation only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sdfleet.domain import GenerationSpec, JobKind

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(slots=True)
class StepInfo:
    """Progress of one job: ``step`` of ``total`` done; ``preview`` a small image, when asked for."""

    step: int
    total: int
    preview: Image | None = None


@dataclass(slots=True)
class GeneratedImage:
    """One image with the seed it was drawn from and its A1111 infotext."""

    image: Image
    seed: int
    subseed: int
    infotext: str


@dataclass(slots=True)
class GenerationResult:
    """Everything one job produced."""

    images: list[GeneratedImage]
    info: dict[str, object] = field(default_factory=dict)


OnStep = Callable[[StepInfo], None]
ShouldStop = Callable[[], bool]


class Engine(Protocol):
    """Turns a generation spec into images. ``generate`` blocks; call it from a worker thread.

    ``on_step`` is called after every denoising step; when ``should_stop()`` turns true the engine
    raises :class:`sdfleet.errors.Interrupted` before the next step.
    """

    name: str

    def capabilities(self) -> EngineCapabilities: ...

    def loaded_models(self) -> list[str]: ...

    def generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult: ...


@dataclass(slots=True, frozen=True)
class EngineCapabilities:
    """What the engine on this machine can do (reported when the worker registers)."""

    kinds: tuple[str, ...]
    archs: tuple[str, ...]
    max_pixels: int
    features: tuple[str, ...]
    device: str
    gpu_name: str
    gpu_memory_mb: int
