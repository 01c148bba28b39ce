"""Outpainting mk2's pure parts: how the sides share the growth, one side's canvas, mask and region, and the
matched-noise fill (the picture's own colours, deterministic, the rest untouched)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdfleet.a1111.outpaint_mk2 import match_histograms, matched_noise, plan_expansion, read_mk2_args
from sdfleet.errors import ValidationError

ALL = ["left", "right", "up", "down"]


def _args(pixels: int, directions: list[str], blur: int = 8) -> list[object]:
    return ["", pixels, blur, directions, 1.0, 0.05]


def test_the_sides_share_the_growth_so_the_canvas_is_a_multiple_of_64() -> None:
    assert read_mk2_args(_args(32, ALL), (64, 64)).sides == (
        ("left", 32),
        ("right", 32),
        ("up", 32),
        ("down", 32),
    )
    # 100 + 2 × 128 = 356 → 384: the 284 new pixels shared half and half; 60 + 128 = 188 → 192 below only
    mk2 = read_mk2_args(_args(128, ["left", "right", "down"]), (100, 60))
    assert mk2.sides == (("left", 142), ("right", 142), ("down", 132))
    assert (mk2.mask_blur, mk2.noise_q, mk2.color_variation) == (8, 1.0, 0.05)
    with pytest.raises(ValidationError) as caught:
        read_mk2_args(_args(32, []), (64, 64))
    assert caught.value.field == "script_args.3"


def _picture() -> Image.Image:
    """Left half red, right half blue, 64 × 64."""
    image = Image.new("RGB", (64, 64), (220, 30, 30))
    image.paste((30, 30, 220), (32, 0, 64, 64))
    return image


def test_one_side_grows_the_canvas_keeps_the_picture_and_fills_the_strip() -> None:
    image = _picture()
    grown = plan_expansion(
        image, "left", 32, width=64, height=64, mask_blur=4, noise_q=1.0, color_variation=0.05
    )
    assert grown.canvas.size == (128, 64) and grown.size == (96, 64)  # 96 wide, padded to 128
    kept = image.crop((4, 0, 64, 64)).tobytes()  # the picture, but for the 4 px blur band next to the strip
    assert grown.canvas.crop((36, 0, 96, 64)).tobytes() == kept
    # the region: the request's width from the new (left) edge, the whole height
    assert grown.region == (0, 0, 64, 64) and grown.job_size == (64, 64)
    mask = np.asarray(grown.mask)
    assert (mask[:, :36] == 255).all() and (mask[:, 36:] == 0).all()  # the strip + 4 px of blur band to draw
    strip = np.asarray(grown.canvas)[:, :32].reshape(-1, 3).astype(int)
    # histogram-matched to the picture: each channel within the picture's own range (green is 30 throughout),
    # red and blue spread between the two halves' values, not black and not one flat colour
    assert (strip[:, 1] == 30).all()
    assert strip[:, [0, 2]].min() >= 30 and strip[:, [0, 2]].max() <= 220
    assert strip[:, 0].std() > 10 and strip[:, 2].std() > 10

    drawn = Image.new("RGB", (64, 64), (1, 2, 3))
    out = grown.finish(drawn)
    assert out.size == (96, 64)
    assert out.getpixel((0, 0)) == (1, 2, 3) and out.getpixel((70, 10)) == (30, 30, 220)
    # a job that drew nothing leaves the fill: the picture still grows
    assert grown.finish(None).crop((36, 0, 96, 64)).tobytes() == kept


def test_growing_down_takes_the_full_width_and_the_requests_height_from_the_bottom() -> None:
    grown = plan_expansion(
        _picture(), "down", 40, width=64, height=48, mask_blur=0, noise_q=1.0, color_variation=0.05
    )
    assert grown.canvas.size == (64, 128) and grown.size == (64, 104)
    assert grown.region == (0, 80, 64, 128)  # 48 px high, at the canvas's bottom
    assert grown.mask.size == (64, 48)


def test_matched_noise_is_deterministic_and_touches_only_the_mask() -> None:
    rng = np.random.default_rng(3)
    source = rng.random((32, 48, 3))
    mask = np.zeros_like(source)
    mask[:, 40:] = 1.0
    first = matched_noise(source, mask, noise_q=1.0, color_variation=0.5)
    again = matched_noise(source, mask, noise_q=1.0, color_variation=0.5)
    assert np.array_equal(first, again)
    assert np.array_equal(first[:, :40], source[:, :40])
    assert not np.allclose(first[:, 40:], source[:, 40:])
    # nothing to fill, or nothing to learn from: the picture as it is
    assert np.array_equal(matched_noise(source, np.zeros_like(source)), source)
    assert np.array_equal(matched_noise(source, np.ones_like(source)), source)


def test_histogram_matching_maps_each_value_to_the_references_value_at_its_quantile() -> None:
    source = np.array([[0.1, 5.0], [0.2, 5.0], [0.3, 7.0], [0.4, 7.0]])
    reference = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    matched = match_histograms(source, reference)
    # quantiles 1/4, 2/4, 3/4, 1 of the reference's (0: 2/4, 1: 1) → 0, 0, 0.5 (between), 1
    assert matched[:, 0].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert matched[:, 1].tolist() == [2.0, 2.0, 4.0, 4.0]  # per channel; equal values stay equal
