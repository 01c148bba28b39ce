"""The model-free ControlNet preprocessors ("annotators"), with the A1111 ControlNet extension's exact
steps, on OpenCV and numpy — cheap enough to run inline on the worker that generates:

* ``canny`` — the picture resized so its short side is the processor resolution (cubic up, area down),
  padded to a multiple of 64 by repeating its edge pixels, ``cv2.Canny`` with the two thresholds (defaults
  100 and 200), the padding cut off again;
* ``threshold`` — resized and padded as for canny, white where every channel is above the threshold
  (default 127), black elsewhere;
* ``invert`` ("invert (from white bg & black line)") — the picture's negative at its own size, for line
  art drawn black on white;
* ``none`` — the picture as it is.

:func:`pixel_perfect_resolution` is the extension's "Pixel Perfect": the processor resolution that maps the
control image onto the generation's size one to one for the unit's resize mode."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sdfleet.specs.controlnet import module_named

__all__ = ["pixel_perfect_resolution", "preprocess", "resize_with_pad"]

Pixels = NDArray[np.uint8]


def _hwc3(pixels: Pixels) -> Pixels:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.concatenate([pixels] * 3, axis=2)
    return pixels[:, :, :3]


def _pad64(size: int) -> int:
    return int(np.ceil(size / 64.0) * 64 - size)


def resize_with_pad(pixels: Pixels, resolution: int) -> tuple[Pixels, tuple[int, int]]:
    """The extension's ``resize_image_with_pad``: short side to ``resolution`` (cubic when enlarging, area
    when shrinking), then edge-padded to multiples of 64; returns the padded picture and the unpadded
    (height, width) to cut back to."""
    image = _hwc3(pixels)
    raw_h, raw_w = image.shape[:2]
    k = float(resolution) / float(min(raw_h, raw_w))
    target_h, target_w = int(np.round(raw_h * k)), int(np.round(raw_w * k))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    resized = np.asarray(cv2.resize(image, (target_w, target_h), interpolation=interpolation), np.uint8)
    padded: Pixels = np.pad(resized, [[0, _pad64(target_h)], [0, _pad64(target_w)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (target_h, target_w)


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
    field: str = "module",
) -> Image.Image:
    """The control map ``name`` makes of ``image`` (RGB)."""
    module = module_named(name, field)
    if module.name == "none":
        return image.convert("RGB")
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if module.name == "invert":
        return Image.fromarray(np.ascontiguousarray(255 - pixels), "RGB")
    padded, (h, w) = resize_with_pad(pixels, resolution)
    if module.name == "canny":
        assert module.threshold_a is not None and module.threshold_b is not None
        low = threshold_a if threshold_a is not None else module.threshold_a[1]
        high = threshold_b if threshold_b is not None else module.threshold_b[1]
        edges = np.asarray(cv2.Canny(padded, low, high), np.uint8)
        return Image.fromarray(_hwc3(edges[:h, :w]).copy(), "RGB")
    assert module.threshold_a is not None  # threshold
    level = threshold_a if threshold_a is not None else module.threshold_a[1]
    binary = np.zeros_like(padded)
    binary[np.min(padded, axis=2) > level] = 255
    return Image.fromarray(np.ascontiguousarray(binary[:h, :w]), "RGB")
