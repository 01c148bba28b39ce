"""The model-free preprocessors' algorithms, each the A1111 ControlNet extension's (its
``scripts/preprocessor/model_free_preprocessors.py``, ``legacy/processor.py`` and ``annotator/shuffle``),
written here on OpenCV and numpy. Each takes a picture (height × width × 3, uint8, RGB) and the module's
slider values and returns the control map; :func:`sdfleet.annotators.run.preprocess`
chooses among them, fills in the sliders' defaults and turns pictures into arrays.

Faithful to the extension where it matters to the nets trained on its maps, quirks included: XDoG's
threshold compares ``2·(255 − dog)`` computed in 8 bits (so it wraps above 127), and the recolor modules read
the RGB picture as OpenCV's BGR."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from sdfleet.annotators.pixels import Pixels, hwc3, resize_with_pad

__all__ = ["FILTERS", "Filter", "inpaint_display", "inpaint_map", "noise_disk"]

Filter = Callable[[Pixels, int, float, float, np.random.Generator], Pixels]
"""(picture, resolution, slider 1, slider 2, random generator) → control map."""

SHUFFLE_CELL = 256
"""The size of the shuffle's smooth random displacement field's cells (the extension's ``F``)."""


def _canny(pixels: Pixels, resolution: int, low: float, high: float, _rng: np.random.Generator) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    edges = np.asarray(cv2.Canny(padded, int(low), int(high)), np.uint8)
    return hwc3(edges[:h, :w])


def _threshold(pixels: Pixels, resolution: int, level: float, _b: float, _rng: np.random.Generator) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    binary = np.zeros_like(padded)
    binary[np.min(padded, axis=2) > level] = 255
    return np.ascontiguousarray(binary[:h, :w])


def _invert(pixels: Pixels, _res: int, _a: float, _b: float, _rng: np.random.Generator) -> Pixels:
    return np.ascontiguousarray(255 - hwc3(pixels))


def _blur(pixels: Pixels, resolution: int, sigma: float, _b: float, _rng: np.random.Generator) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    cut = np.ascontiguousarray(padded[:h, :w])
    return np.asarray(cv2.GaussianBlur(cut, (0, 0), float(sigma)), np.uint8)


def _xdog(pixels: Pixels, resolution: int, level: float, _b: float, _rng: np.random.Generator) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    values = padded.astype(np.float32)
    fine = cv2.GaussianBlur(values, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(values, (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    strength = (2 * (255 - dog.astype(np.int32))) % 256  # the extension's uint8 arithmetic wraps
    out = np.zeros_like(padded)
    out[strength > level] = 255
    return np.ascontiguousarray(out[:h, :w])


def noise_disk(height: int, width: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [0, 1] of ``height`` × ``width``: uniform noise on a grid of ``cell``-pixel
    cells, enlarged with cubic interpolation (the extension's ``make_noise_disk`` with one channel)."""
    coarse = rng.uniform(0.0, 1.0, size=(height // cell + 2, width // cell + 2))
    big = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    field = np.asarray(big[cell : cell + height, cell : cell + width], dtype=np.float64)
    field -= field.min()
    top = field.max()
    return field / top if top > 0 else field


def _shuffle(pixels: Pixels, resolution: int, _a: float, _b: float, rng: np.random.Generator) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    cut = np.ascontiguousarray(padded[:h, :w])
    x = noise_disk(h, w, SHUFFLE_CELL, rng) * float(w - 1)
    y = noise_disk(h, w, SHUFFLE_CELL, rng) * float(h - 1)
    # one two-channel flow map or two one-channel maps: the same remap
    return np.asarray(cv2.remap(cut, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR), np.uint8)


def _tile_resample(pixels: Pixels, _res: int, rate: float, _b: float, _rng: np.random.Generator) -> Pixels:
    image = hwc3(pixels)
    if rate < 1.1:
        return image
    h, w = int(image.shape[0] / rate), int(image.shape[1] / rate)
    return np.asarray(cv2.resize(image, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA), np.uint8)


def _identity(pixels: Pixels, _res: int, _a: float, _b: float, _rng: np.random.Generator) -> Pixels:
    return hwc3(pixels)


def _recolor(conversion: int, channel: int) -> Filter:
    def run(pixels: Pixels, _res: int, gamma: float, _b: float, _rng: np.random.Generator) -> Pixels:
        plane = np.asarray(cv2.cvtColor(hwc3(pixels), conversion))[:, :, channel].astype(np.float32) / 255.0
        grey = (np.power(plane, gamma) * 255.0).clip(0, 255).astype(np.uint8)
        return hwc3(grey)

    return run


def _lineart_standard(
    pixels: Pixels, resolution: int, _a: float, _b: float, _rng: np.random.Generator
) -> Pixels:
    padded, (h, w) = resize_with_pad(pixels, resolution)
    values = padded.astype(np.float32)
    blurred = cv2.GaussianBlur(values, (0, 0), 6.0)
    intensity = np.min(blurred - values, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong))) if strong.size else 16.0
    intensity *= 127
    return hwc3(intensity.clip(0, 255).astype(np.uint8)[:h, :w])


FILTERS: dict[str, Filter] = {
    "canny": _canny,
    "threshold": _threshold,
    "invert": _invert,
    "blur_gaussian": _blur,
    "scribble_xdog": _xdog,
    "shuffle": _shuffle,
    "tile_resample": _tile_resample,
    "tile_colorfix": _identity,
    "tile_colorfix+sharp": _identity,
    "recolor_luminance": _recolor(cv2.COLOR_BGR2LAB, 0),
    "recolor_intensity": _recolor(cv2.COLOR_BGR2HSV, 2),
    "lineart_standard": _lineart_standard,
}
"""The modules that read one picture, by the extension's names."""


def inpaint_map(pixels: Pixels, mask: Pixels) -> Pixels:
    """The inpaint modules' control map: the picture with the mask (its first channel, resized to the
    picture) as a fourth channel, which the net's hint turns into −1 where the mask is set."""
    image = hwc3(pixels)
    plane = mask if mask.ndim == 2 else mask[:, :, 0]
    if plane.shape != image.shape[:2]:
        size = (image.shape[1], image.shape[0])
        plane = np.asarray(cv2.resize(plane, size, interpolation=cv2.INTER_NEAREST), np.uint8)
    return np.ascontiguousarray(np.concatenate([image, plane[:, :, None]], axis=2))


def inpaint_display(control: Pixels) -> Pixels:
    """How the extension shows an inpaint map: the masked part half transparent (alpha ``255 − mask/2``)."""
    shown = control.copy()
    shown[:, :, 3] = 255 - control[:, :, 3] // 2
    return shown
