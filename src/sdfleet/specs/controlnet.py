"""The ControlNet preprocessors ("modules") this server runs, as data: names (the A1111 ControlNet
extension's), the sliders each one reads with the extension's defaults and ranges, and the check of a unit's
module at submit. The pictures are made by :mod:`sdfleet.engine.controlnet.preprocess`; this table stays
free of OpenCV and torch so the API and the job service can use it."""

from __future__ import annotations

from dataclasses import dataclass

from sdfleet.errors import ValidationError
from sdfleet.specs.ipadapter import IP_MODULES

__all__ = ["LABELS", "MODULES", "NEEDS_WEIGHTS", "Module", "module_named", "slider_value"]

Slider = tuple[str, float, float, float, float]
"""(label, default, min, max, step)."""


@dataclass(frozen=True, slots=True)
class Module:
    """A preprocessor as the extension lists it: its name and the sliders it reads (``None``: not shown):
    ``resolution`` (default, min, max, step), ``threshold_a``/``threshold_b`` (label, default, min, max,
    step). ``fixed_resolution``: the processor resolution a module with no resolution slider still resizes
    to (shuffle: 512). ``needs_mask``: it reads a mask beside the picture (the inpaint modules).
    ``sampling_step``: what the extension also does inside the sampling loop, which this server does not
    (the tile colour fix, inpaint_only's restore); the control map itself is the extension's."""

    name: str
    resolution: tuple[int, int, int, int] | None = (512, 64, 2048, 8)
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    fixed_resolution: int | None = None
    needs_mask: bool = False
    sampling_step: str | None = None
    tags: tuple[str, ...] = ()


_GAMMA: Slider = ("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
_VARIATION: Slider = ("Variation", 8.0, 3.0, 32.0, 1.0)
_COLORFIX = "the latent colour fix (x0 − blur(x0) + blur(init), Variation as the blur size)"

MODULES: dict[str, Module] = {
    "none": Module("none", resolution=None),
    "canny": Module(
        "canny",
        threshold_a=("Low Threshold", 100, 1, 255, 1),
        threshold_b=("High Threshold", 200, 1, 255, 1),
        tags=("Canny",),
    ),
    "threshold": Module("threshold", threshold_a=("Binarization Threshold", 127, 0, 255, 1)),
    "invert": Module("invert", resolution=None, tags=("Canny", "Lineart", "Scribble", "MLSD")),
    "blur_gaussian": Module("blur_gaussian", threshold_a=("Sigma", 9.0, 0.01, 64.0, 0.01), tags=("Tile",)),
    "scribble_xdog": Module(
        "scribble_xdog", threshold_a=("XDoG Threshold", 32, 1, 64, 0.01), tags=("Scribble",)
    ),
    "lineart_standard": Module("lineart_standard", tags=("Lineart",)),
    "shuffle": Module("shuffle", resolution=None, fixed_resolution=512, tags=("Shuffle",)),
    "tile_resample": Module(
        "tile_resample",
        resolution=None,
        threshold_a=("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),
        tags=("Tile",),
    ),
    "tile_colorfix": Module(
        "tile_colorfix", resolution=None, threshold_a=_VARIATION, sampling_step=_COLORFIX, tags=("Tile",)
    ),
    "tile_colorfix+sharp": Module(
        "tile_colorfix+sharp",
        resolution=None,
        threshold_a=_VARIATION,
        threshold_b=("Sharpness", 1.0, 0.0, 2.0, 0.01),
        sampling_step=_COLORFIX,
        tags=("Tile",),
    ),
    "recolor_luminance": Module("recolor_luminance", resolution=None, threshold_a=_GAMMA, tags=("Recolor",)),
    "recolor_intensity": Module("recolor_intensity", resolution=None, threshold_a=_GAMMA, tags=("Recolor",)),
    "inpaint": Module("inpaint", resolution=None, needs_mask=True, tags=("Inpaint",)),
    "inpaint_only": Module(
        "inpaint_only",
        resolution=None,
        needs_mask=True,
        sampling_step="the restore of the unmasked latent after each step",
        tags=("Inpaint",),
    ),
    # the extension's IP-Adapter preprocessors: the CLIP vision encoder of an IP-Adapter unit
    **{name: Module(name, resolution=None, tags=("IP-Adapter",)) for name in IP_MODULES},
}
"""The preprocessors this server runs, by the extension's names."""

_ALIASES = {
    "invert (from white bg & black line)": "invert",
    "lineart_standard (from white bg & black line)": "lineart_standard",
    "inpaint_global_harmonious": "inpaint",
}


LABELS = {module: label for label, module in _ALIASES.items()}
"""The extension's display labels of the modules that have one (``module_list?alias_names=true``)."""

NEEDS_WEIGHTS = frozenset(
    {
        "depth", "depth_midas", "depth_leres", "depth_leres++", "depth_zoe", "depth_anything",
        "depth_anything_v2", "depth_hand_refiner", "openpose", "openpose_face", "openpose_faceonly",
        "openpose_full", "openpose_hand", "dw_openpose_full", "animal_openpose", "densepose",
        "densepose_parula", "hed", "hed_safe", "softedge_hed", "softedge_hedsafe", "pidinet", "pidinet_safe",
        "softedge_pidinet", "softedge_pidisafe", "te_hed", "softedge_teed", "pidinet_scribble",
        "scribble_pidinet", "scribble_hed", "pidinet_sketch", "t2ia_sketch_pidi", "lineart",
        "lineart_realistic", "lineart_coarse", "lineart_anime", "lineart_anime_denoise", "mlsd", "normal_bae",
        "normal_map", "normal_midas", "normal_dsine", "segmentation", "seg_ufade20k", "oneformer_coco",
        "seg_ofcoco", "oneformer_ade20k", "seg_ofade20k", "anime_face_segment", "seg_anime_face",
        "mediapipe_face", "inpaint_only+lama", "clip_vision", "t2ia_style_clipvision", "mobile_sam",
    }
)  # fmt: skip
"""The extension's preprocessors that run a model of their own: they need an annotate worker with the
weights (the ``annotate`` job kind), which this server does not have yet."""


def module_named(name: str, field: str) -> Module:
    """The preprocessor ``name`` (the extension's names and aliases, any case), or a 422 naming ``field``
    (saying so when it is one of the extension's modules that need weights of their own)."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in NEEDS_WEIGHTS:
        raise ValidationError(
            f"module {name!r} runs a model of its own: it needs an annotate worker and an annotator of its "
            f"family in the registry; the model-free modules ({', '.join(MODULES)}) run anywhere, or send the "
            "control map itself as the image, with module 'none'",
            field=field,
        )
    if key not in MODULES:
        raise ValidationError(
            f"module {name!r} is not a preprocessor this server runs (it runs {', '.join(MODULES)}); "
            "or send the control map itself as the image, with module 'none'",
            field=field,
        )
    return MODULES[key]


def slider_value(value: float | None, slider: Slider | None) -> float:
    """A slider's value as the extension takes it: its default when not given or outside the slider's range
    (the extension resets out-of-range values without an error, e.g. the ``-1`` clients send)."""
    if slider is None:
        return 0.0
    _, default, low, high, _ = slider
    if value is None or not low <= value <= high:
        return float(default)
    return float(value)
