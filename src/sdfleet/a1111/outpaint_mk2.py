"""A1111's "Outpainting mk2" (``scripts/outpainting_mk_2.py``) as rounds of ordinary inpainting jobs: the
picture grows one side at a time (left, right, up, down — each side's growth depends on the last), the new
strip filled with noise shaped like the picture itself (:func:`matched_noise`: the picture's own frequency
spectrum and colour histogram, so the sampler starts from something that already looks like the scene),
and the strip plus a band of the old picture inpainted at the request's size with "original" as masked
content. The whole canvas is rounded up to a multiple of 64 and the sides share the growth as A1111 shares
it. Pure: images in, images out; the route submits one job per picture per side.

The fill follows g-diffuser's matched noise as A1111 ships it (FFT of the masked picture, noise shaped by its
magnitude ``** noise_q`` and phase, histogram-matched to the unmasked pixels), written here with numpy (the
histogram match too: scikit-image is not a dependency for one function)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from sdfleet.a1111.outpaint import DIRECTIONS
from sdfleet.a1111.script_args import ArgSpec, arg_error

__all__ = ["Expansion", "Mk2Args", "matched_noise", "mk2_arg_specs", "plan_expansion", "read_mk2_args"]

Floats = NDArray[np.float64]

INFO = (
    '<p style="margin-bottom:0.75em">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, '
    "Denoising strength: 0.8</p>"
)


def mk2_arg_specs(_: bool) -> tuple[ArgSpec, ...]:
    """``ui()``'s components in order: the info text, pixels, mask blur, directions, fall-off, colour."""
    return (
        ArgSpec("Info", INFO, "text"),
        ArgSpec("Pixels to expand", 128, "int", minimum=8, maximum=256, step=8),
        ArgSpec("Mask blur", 8, "int", minimum=0, maximum=64, step=1),
        ArgSpec("Outpainting direction", DIRECTIONS, "multi", choices=DIRECTIONS),
        ArgSpec(
            "Fall-off exponent (lower=higher detail)", 1.0, "number", minimum=0.0, maximum=4.0, step=0.01
        ),
        ArgSpec("Color variation", 0.05, "number", minimum=0.0, maximum=1.0, step=0.01),
    )


@dataclass(frozen=True, slots=True)
class Mk2Args:
    """The script's arguments, read; ``sides``: (side, pixels) in A1111's order, the canvas rounded to 64."""

    sides: tuple[tuple[str, int], ...]
    mask_blur: int
    noise_q: float
    color_variation: float


def read_mk2_args(args: Sequence[Any], init_size: tuple[int, int]) -> Mk2Args:
    """``run()``'s set-up: how many pixels each chosen side grows by, so that the whole canvas is a multiple
    of 64 on both axes (the growth shared between opposite sides in proportion, as A1111 shares it)."""
    pixels, mask_blur, directions = int(args[1]), int(args[2]), list(args[3])
    if not directions:
        raise arg_error(3, "choose at least one outpainting direction")
    width, height = init_size
    grow = {side: (pixels if side in directions else 0) for side in DIRECTIONS}
    for first, second, size in (("left", "right", width), ("up", "down", height)):
        target = math.ceil((size + grow[first] + grow[second]) / 64) * 64
        if grow[first] > 0:
            grow[first] = grow[first] * (target - size) // (grow[first] + grow[second])
        if grow[second] > 0:
            grow[second] = target - size - grow[first]
    sides = tuple((side, grow[side]) for side in DIRECTIONS if grow[side] > 0)
    return Mk2Args(sides, mask_blur, float(args[4]), float(args[5]))


@dataclass(slots=True)
class Expansion:
    """One side's growth of one picture: the grown canvas (new strip noise-filled, padded to ÷64), the region
    that is inpainted (``region``: left, top, right, bottom; the job's size) with its ``init`` and ``mask``,
    and the size the picture has once grown (``size``)."""

    canvas: Image.Image
    region: tuple[int, int, int, int]
    init: Image.Image
    mask: Image.Image
    size: tuple[int, int]

    @property
    def job_size(self) -> tuple[int, int]:
        """The inpainting job's width and height."""
        left, top, right, bottom = self.region
        return right - left, bottom - top

    def finish(self, drawn: Image.Image | None) -> Image.Image:
        """The grown picture: the job's image pasted over its region (a job that drew nothing — canceled —
        leaves the noise), cut to the grown size."""
        out = self.canvas.copy()
        if drawn is not None:
            out.paste(drawn.convert("RGB").resize(self.job_size), self.region[:2])
        return out.crop((0, 0, *self.size))


def plan_expansion(
    image: Image.Image,
    side: str,
    pixels: int,
    *,
    width: int,
    height: int,
    mask_blur: int,
    noise_q: float,
    color_variation: float,
) -> Expansion:
    """A1111's ``expand()`` for one picture and one side: the canvas grown by ``pixels`` on ``side`` (then
    padded to ÷64), its mask (white: to draw; the old picture black but for ``mask_blur`` pixels next to the
    new strip), the strip filled with :func:`matched_noise`, and the region to inpaint: across the grown
    axis at most the request's ``width``/``height`` from the new edge (rounded down to ÷8, as every job's
    size is), the full canvas along the other axis."""
    horizontal = side in ("left", "right")
    add_w, add_h = (pixels, 0) if horizontal else (0, pixels)
    res_w, res_h = image.width + add_w, image.height + add_h
    canvas_w, canvas_h = math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64
    canvas = Image.new("RGB", (canvas_w, canvas_h))
    canvas.paste(image.convert("RGB"), (add_w if side == "left" else 0, add_h if side == "up" else 0))
    mask = Image.new("L", (canvas_w, canvas_h), "white")
    # the far edges exclusive (PIL's are not): A1111's rectangle also keeps one column or row of the black
    # padding, which then counts among the colours the fill is matched to
    ImageDraw.Draw(mask).rectangle(
        (
            pixels + mask_blur if side == "left" else 0,
            pixels + mask_blur if side == "up" else 0,
            (canvas_w - pixels - mask_blur if side == "right" else res_w) - 1,
            (canvas_h - pixels - mask_blur if side == "down" else res_h) - 1,
        ),
        fill="black",
    )
    source = np.asarray(canvas, dtype=np.float64) / 255.0
    weights = np.asarray(mask, dtype=np.float64)[..., None].repeat(3, axis=2) / 255.0
    filled = matched_noise(source, weights, noise_q=noise_q, color_variation=color_variation)
    canvas = Image.fromarray((np.clip(filled, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")

    target_w = _multiple_of_8(min(width, res_w)) if horizontal else canvas_w
    target_h = canvas_h if horizontal else _multiple_of_8(min(height, res_h))
    left = 0 if side == "left" else canvas_w - target_w
    top = 0 if side == "up" else canvas_h - target_h
    region = (left, top, left + target_w, top + target_h)
    return Expansion(canvas, region, canvas.crop(region), mask.crop(region), (res_w, res_h))


def _multiple_of_8(value: int) -> int:
    return max(8, value // 8 * 8)


# ---------------------------------------------------------------------------- the fill


def _fft(data: Floats | NDArray[np.complex128]) -> NDArray[np.complex128]:
    """Orthonormal 2-D FFT per channel, shifted before and after (the zero frequency in the middle)."""
    return np.fft.ifftshift(
        np.fft.fft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1)
    )


def _ifft(data: NDArray[np.complex128] | Floats) -> NDArray[np.complex128]:
    return np.fft.ifftshift(
        np.fft.ifft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1)
    )


def _falloff_window(rows: int, cols: int) -> Floats:
    """``1 / ((x² + 1)(y² + 1))`` over [-1, 1] scaled by the aspect ratio: the spectrum of the start noise."""
    short = min(rows, cols)
    x = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / short)
    y = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / short)
    window: Floats = 1.0 / np.outer(x**2 + 1.0, y**2 + 1.0)
    return window


def match_histograms(source: Floats, reference: Floats) -> Floats:
    """Each column (channel) of ``source`` (N × C) mapped so that its histogram is ``reference``'s (M × C):
    each value to the reference value at the same quantile."""
    out = np.empty_like(source)
    for c in range(source.shape[1]):
        values, inverse, counts = np.unique(source[:, c], return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference[:, c], return_counts=True)
        quantiles = np.cumsum(counts) / source.shape[0]
        ref_quantiles = np.cumsum(ref_counts) / reference.shape[0]
        out[:, c] = np.interp(quantiles, ref_quantiles, ref_values)[inverse.reshape(-1)]
    return out


def matched_noise(
    source: Floats, mask: Floats, *, noise_q: float = 1.0, color_variation: float = 0.05
) -> Floats:
    """``source`` (H × W × 3 in [0, 1]) with its masked part (``mask`` 1, same shape) replaced by noise of the
    picture's own spectrum and colours: noise with a 1/f-like fall-off, shaped by the masked picture's FFT
    magnitude ``** noise_q`` and phase, normalised, then histogram-matched per channel to the unmasked
    pixels. ``color_variation``: how much of the start noise is coloured rather than grey. Deterministic
    (the noise's seed is fixed: the sampler's seed varies the result)."""
    grey_mask = mask.mean(axis=2)
    to_fill = grey_mask > 1e-6
    reference = grey_mask < 1e-3
    if not to_fill.any() or not reference.any():
        return source.copy()
    windowed = source * (1.0 - mask)
    peak = windowed.max()
    if peak > 0:
        windowed = windowed / peak
    windowed = windowed + source.mean() * mask  # the masked area at the average colour, not black
    spectrum = _fft(windowed)
    magnitude = np.abs(spectrum)
    phase = np.divide(spectrum, magnitude, out=np.ones_like(spectrum), where=magnitude > 0)

    rng = np.random.default_rng(0)
    noise = rng.random(source.shape)
    grey = noise.mean(axis=2, keepdims=True)
    noise = noise * color_variation + (1.0 - color_variation) * grey
    noise = np.real(_ifft(_fft(noise) * _falloff_window(*source.shape[:2])[..., None]))
    shaped_spectrum = np.abs(_fft(noise)) ** 2 * magnitude**noise_q * phase
    shaped = np.real(_ifft(shaped_spectrum))
    shaped -= shaped.min()
    top = shaped.max()
    if top > 0:
        shaped /= top
    shaped[to_fill] = match_histograms(shaped[to_fill], source[reference])
    result: Floats = np.clip(source * (1.0 - mask) + shaped * mask, 0.0, 1.0)
    return result
