"""The engine's narrow door: a validated spec in, images out, progress per step, interruptible.

The engine knows nothing of HTTP, stores or workers. Implementations: ``DiffusersEngine`` (the real
one) and :class:`sdfleet.engine.fake.FakeEngine` (tests and fleet simulation only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_INPUT_PIXELS = 8192 * 8192
"""The most pixels an init image or mask may have once decoded (checked from its header, before a
decompression bomb is unpacked)."""


def open_input_image(data: bytes, field: str, max_pixels: int = MAX_INPUT_PIXELS) -> Image:
    """Decode an input image (init image, mask) the job brought, or raise :class:`InvalidInput`
    naming ``field``: bytes that only look like an image, a truncated file, or one whose header
    promises more than ``max_pixels`` pixels (a decompression bomb — refused before decoding). Every
    engine decodes inputs through here, so a bad input is always the input's fault."""
    import io

    from PIL import Image as PILImage

    try:
        image = PILImage.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidInput(
                f"{field}: the image is {width}x{height} pixels, more than the {max_pixels} allowed",
                field=field,
            )
        image.load()
    except InvalidInput:
        raise
    except MemoryError:  # this worker's problem, not the input's
        raise
    except PILImage.DecompressionBombError as exc:
        raise InvalidInput(f"{field}: the image is a decompression bomb ({exc})", field=field) from exc
    except Exception as exc:  # whatever the decoder chokes on is in the bytes
        raise InvalidInput(
            f"{field}: not a readable image ({type(exc).__name__}: {exc})", field=field
        ) from exc
    return image


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
    detected_maps: list[Image] = field(default_factory=list)
    """ControlNet control maps the job returns after its images (one per unit with ``save_detected_map``),
    as the A1111 extension appends them; not counted as generated images."""


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
