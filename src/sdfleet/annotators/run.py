"""The model-free ControlNet preprocessors ("annotators"), with the A1111 ControlNet extension's exact
steps, on OpenCV and numpy — cheap enough to run inline on the worker that generates, or in the API process
for ``/controlnet/detect``, and free of torch so a CPU annotator worker runs them without diffusers:

* ``canny``, ``threshold``, ``blur_gaussian``, ``scribble_xdog``, ``lineart_standard``, ``shuffle`` — the
  picture resized so its short side is the processor resolution (cubic up, area down), padded to a multiple
  of 64 by repeating its edge pixels, the filter, the padding cut off (:mod:`.filters`);
* ``invert``, ``tile_resample`` (area-shrunk by the down-sampling rate), ``tile_colorfix(+sharp)`` (the
  picture itself), ``recolor_luminance`` / ``recolor_intensity`` (L of Lab, V of HSV, gamma-corrected) — at
  the picture's own size;
* ``inpaint`` / ``inpaint_only`` — the picture with its mask as an alpha channel (the net's hint is −1
  where the mask is set); a mask is required;
* ``none`` — the picture as it is.

Slider values outside a slider's range (the ``-1`` clients send) fall back to the module's defaults, as
the extension resets them. ``shuffle`` draws its displacement field from ``seed`` (the same seed, the same
map). :func:`pixel_perfect_resolution` is the extension's "Pixel Perfect"."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdfleet.annotators.filters import FILTERS, inpaint_display, inpaint_map
from sdfleet.annotators.pixels import resize_with_pad
from sdfleet.errors import ValidationError
from sdfleet.specs.controlnet import module_named, slider_value

__all__ = ["display_map", "pixel_perfect_resolution", "preprocess", "resize_with_pad"]

_RESOLUTION_RANGE = (64, 2048)


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, resize_mode: str) -> int:
    """The processor resolution under "Pixel Perfect": the short side the control image has once fitted to
    ``width`` × ``height`` (scaled to fit inside for ``Resize and Fill``, to cover otherwise)."""
    k0, k1 = height / image.height, width / image.width
    k = min(k0, k1) if resize_mode == "Resize and Fill" else max(k0, k1)
    return int(np.round(k * min(image.width, image.height)))


def preprocess(
    name: str,
    image: Image.Image,
    *,
    resolution: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    mask: Image.Image | None = None,
    seed: int = 0,
    field: str = "module",
) -> Image.Image:
    """The control map ``name`` makes of ``image`` (RGB; RGBA with the mask as alpha for the inpaint
    modules, which need ``mask``)."""
    module = module_named(name, field)
    if module.name == "none":
        return image.convert("RGB")
    if module.name not in FILTERS and not module.needs_mask:  # the IP-Adapter preprocessors: no map
        raise ValidationError(
            f"module {module.name!r} makes no control map: it is an IP-Adapter's image encoder", field=field
        )
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if module.needs_mask:
        if mask is None:
            raise ValidationError(f"module {module.name!r} needs a mask beside the image", field=field)
        plane = np.asarray(mask.convert("RGB"), dtype=np.uint8)
        return Image.fromarray(inpaint_map(pixels, plane), "RGBA")
    low, high = _RESOLUTION_RANGE
    res = resolution if low <= resolution <= high else 512
    if module.resolution is None and module.fixed_resolution is not None:
        res = module.fixed_resolution
    a = slider_value(threshold_a, module.threshold_a)
    b = slider_value(threshold_b, module.threshold_b)
    out = FILTERS[module.name](pixels, res, a, b, np.random.default_rng(seed))
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def display_map(name: str, control: Image.Image) -> Image.Image:
    """How a control map is shown as a detected map (the extension's display image): the inpaint maps with
    the masked part half transparent; every other map as it is."""
    if control.mode == "RGBA" and module_named(name, "module").needs_mask:
        return Image.fromarray(inpaint_display(np.asarray(control, dtype=np.uint8)), "RGBA")
    return control
