"""The ``annotate`` job (:class:`AnnotateSpec`): one ControlNet preprocessor ("annotator") run on one image,
its control map the job's one PNG output — validated without OpenCV, onnxruntime or torch, so the API, the
job service and a CPU-only annotate worker all read it.

Two sorts of modules:

* **model-free** ones (:data:`sdfleet.specs.controlnet.MODULES`: canny, threshold, invert…) run on OpenCV and
  numpy on any worker that runs annotate jobs, generation workers included;
* modules **with weights** (:data:`WEIGHTED`: the depth estimators, line art) run an ONNX file registered in the model
  registry as ``kind: annotator`` whose ``arch`` is the module's family; only workers that advertise the
  module's feature (:attr:`Annotator.feature`, onnxruntime installed) claim them.

The parameters are normalised the way the A1111 ControlNet extension reads them (:func:`normalised`): the
processor resolution clamped to the module's slider, a threshold the module does not read dropped, one out of
its slider's range reset to the default. The normalised parameters, the image's sha256 and the annotator's
weights (when it has any) name the map in the fleet-wide cache (:func:`cache_key`): one reference image is
preprocessed once for every request that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from sdfleet.errors import ValidationError
from sdfleet.specs.controlnet import MODULES, NEEDS_WEIGHTS, Module, module_named

__all__ = [
    "ANNOTATION_PREFIX",
    "WEIGHTED",
    "AnnotateSpec",
    "Annotator",
    "cache_key",
    "find_module",
    "normalised",
    "pixel_perfect_resolution",
]

ANNOTATION_PREFIX = "annotations/"
"""Where the fleet-wide cache of control maps lives in the blob store."""


@dataclass(frozen=True, slots=True)
class Annotator:
    """A preprocessor with weights: its name, the registry family (``arch`` of its ``annotator`` model), the
    worker feature that runs it, and its sliders (as :class:`~sdfleet.specs.controlnet.Module`)."""

    name: str
    family: str
    feature: str
    resolution: tuple[int, int, int, int] | None = (512, 64, 2048, 8)
    threshold_a: tuple[str, float, float, float, float] | None = None
    threshold_b: tuple[str, float, float, float, float] | None = None


WEIGHTED: dict[str, Annotator] = {
    "depth_midas": Annotator("depth_midas", family="midas", feature="annotate_depth"),
    "depth_anything": Annotator("depth_anything", family="depth_anything", feature="annotate_depth"),
    "lineart_realistic": Annotator("lineart_realistic", family="lineart", feature="annotate_lineart"),
    "lineart_coarse": Annotator("lineart_coarse", family="lineart_coarse", feature="annotate_lineart"),
}
"""The preprocessors with weights this server runs (ONNX through onnxruntime), by the extension's names."""

_WEIGHTED_ALIASES = {"depth": "depth_midas", "lineart": "lineart_realistic"}  # the extension's old names


def find_module(name: str, field: str) -> Module | Annotator:
    """The preprocessor ``name`` — model-free or with weights, by the extension's names and aliases, any case —
    or a 422 naming ``field``."""
    key = name.lower()
    key = _WEIGHTED_ALIASES.get(key, key)
    if key in WEIGHTED:
        return WEIGHTED[key]
    try:
        return module_named(name, field)
    except ValidationError as exc:
        every = ", ".join([*MODULES, *WEIGHTED])
        what = (
            "runs a model this server has no annotator for yet"
            if key in NEEDS_WEIGHTS
            else "is not a preprocessor this server runs"
        )
        raise ValidationError(
            f"module {name!r} {what} (it runs {every}); "
            "or send the control map itself as the image, with module 'none'",
            field=field,
        ) from exc


def _slider(value: float | None, slider: tuple[str, float, float, float, float] | None) -> float | None:
    if slider is None:
        return None
    _, default, low, high, _ = slider
    if value is None or not low <= value <= high:  # the extension resets an out-of-range value silently
        return float(default)
    return float(value)


def normalised(
    module: Module | Annotator, processor_res: int, threshold_a: float | None, threshold_b: float | None
) -> tuple[int, float | None, float | None]:
    """The parameters a module really reads: the resolution within its slider (0: it reads none), each
    threshold it reads within its slider's range (else its default), None for a threshold it does not read."""
    res = 0
    if module.resolution is not None:
        default, low, high, _ = module.resolution
        res = processor_res if processor_res > 0 else default
        res = min(max(res, low), high)
    return res, _slider(threshold_a, module.threshold_a), _slider(threshold_b, module.threshold_b)


def pixel_perfect_resolution(
    image_width: int, image_height: int, width: int, height: int, resize_mode: str
) -> int:
    """The extension's "Pixel Perfect" processor resolution: the short side the control image has once fitted
    to ``width`` × ``height`` (scaled to fit inside for ``Resize and Fill``, to cover otherwise)."""
    k0, k1 = height / image_height, width / image_width
    k = min(k0, k1) if resize_mode == "Resize and Fill" else max(k0, k1)
    return round(k * min(image_width, image_height))


class AnnotateSpec(BaseModel):
    """One ``annotate`` job: run ``module`` on ``image`` (a stored input, ``blob:inputs/…``, or inline base64
    at submit) at ``processor_res`` with the module's thresholds; the control map is the job's output.

    Filled in at submit, whatever a client sends: the parameters normalised (:func:`normalised`), ``model``
    (the registered ``annotator`` a module with weights runs) and ``cache_key`` (where the map is kept for the
    whole fleet)."""

    model_config = ConfigDict(extra="forbid")

    module: str = Field(min_length=1, max_length=100)
    image: str = Field(min_length=1)
    processor_res: int = Field(default=512, ge=0, le=2048)
    threshold_a: float | None = Field(default=None, ge=-1e6, le=1e6)
    threshold_b: float | None = Field(default=None, ge=-1e6, le=1e6)
    model: str | None = Field(default=None, max_length=200)
    cache_key: str | None = Field(default=None, max_length=400)

    @property
    def entry(self) -> Module | Annotator:
        """The module's table entry (the spec's module was checked at submit)."""
        return find_module(self.module, "module")

    @property
    def has_weights(self) -> bool:
        return isinstance(self.entry, Annotator)


def _number(value: float | None) -> str:
    return "x" if value is None else f"{value:g}"


def cache_key(image_sha256: str, spec: AnnotateSpec, model_sha256: str | None = None) -> str:
    """The blob key of a control map in the fleet-wide cache: the image's sha256, the module, its normalised
    parameters and (modules with weights) the first 16 hex digits of the annotator file's sha256."""
    params = f"{spec.processor_res}-{_number(spec.threshold_a)}-{_number(spec.threshold_b)}"
    if model_sha256:
        params += f"-{model_sha256[:16]}"
    return f"{ANNOTATION_PREFIX}{image_sha256}/{spec.module}/{params}.png"
