"""The model-free ControlNet preprocessors against the A1111 ControlNet extension's algorithm, written out
here step by step as the extension spells it (short side to the processor resolution, cubic up / area down,
edge padding to multiples of 64, ``cv2.Canny``, the padding cut off), on a real photograph (scikit-image's
public-domain astronaut) and on drawn pictures of odd sizes; the module table's sliders; Pixel Perfect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdfleet.engine.controlnet.preprocess import display_map, pixel_perfect_resolution, preprocess
from sdfleet.errors import ValidationError
from sdfleet.specs.controlnet import MODULES, module_named


def _reference_canny(rgb: np.ndarray, resolution: int, low: float, high: float) -> np.ndarray:
    raw_h, raw_w = rgb.shape[:2]
    k = float(resolution) / float(min(raw_h, raw_w))
    h, w = int(np.round(raw_h * k)), int(np.round(raw_w * k))
    resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    pad_h, pad_w = int(np.ceil(h / 64) * 64 - h), int(np.ceil(w / 64) * 64 - w)
    padded = np.pad(resized, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    return cv2.Canny(padded, low, high)[:h, :w]


def _drawing(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (240, 230, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 6, width * 3 // 4, height * 5 // 6), fill=(30, 90, 160))
    draw.line((0, height - 1, width - 1, 0), fill=(200, 20, 20), width=3)
    return image


def _photo() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut())  # 512 × 512, public domain


@pytest.mark.parametrize(
    ("picture", "resolution", "low", "high"),
    [
        ("photo", 512, 100, 200),  # as it is
        ("photo", 256, 100, 200),  # shrunk: area
        ("photo", 704, 60, 140),  # enlarged: cubic; padded to 704 (a multiple of 64 already)
        ("drawing", 200, 100, 200),  # 333 × 170 → short side 200: 392 × 200, padded to 448 × 256
        ("drawing", 97, 30, 90),
    ],
)
def test_canny_equals_the_extensions_algorithm_pixel_for_pixel(
    picture: str, resolution: int, low: int, high: int
) -> None:
    image = _photo() if picture == "photo" else _drawing(333, 170)
    ours = np.asarray(preprocess("canny", image, resolution=resolution, threshold_a=low, threshold_b=high))
    reference = _reference_canny(np.asarray(image), resolution, low, high)
    assert ours.shape == (*reference.shape, 3)
    assert np.array_equal(ours[:, :, 0], reference) and np.array_equal(ours[:, :, 2], reference)
    assert 0 < (reference > 0).mean() < 0.5  # edges found, not noise everywhere


def test_canny_defaults_and_sliders_are_the_extensions() -> None:
    canny = MODULES["canny"]
    assert canny.resolution == (512, 64, 2048, 8)
    assert canny.threshold_a == ("Low Threshold", 100, 1, 255, 1)
    assert canny.threshold_b == ("High Threshold", 200, 1, 255, 1)
    image = _drawing(128, 96)
    default = np.asarray(preprocess("canny", image))
    assert np.array_equal(default[:, :, 1], _reference_canny(np.asarray(image), 512, 100, 200))


def test_threshold_and_invert() -> None:
    image = _drawing(64, 64)
    binary = np.asarray(preprocess("threshold", image, resolution=64, threshold_a=150))
    expected = np.where(np.asarray(image).min(axis=2) > 150, 255, 0)
    assert np.array_equal(binary[:, :, 0], expected)
    inverted = preprocess("Invert (from white bg & black line)", image)
    assert np.array_equal(np.asarray(inverted), 255 - np.asarray(image))


def test_an_unknown_module_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        module_named("depth_midas", "params.controlnet.1.module")
    assert refused.value.field == "params.controlnet.1.module" and "canny" in refused.value.message


def test_pixel_perfect_fits_the_generation_one_to_one() -> None:
    image = Image.new("RGB", (300, 200))
    assert pixel_perfect_resolution(image, 512, 512, "Crop and Resize") == 512  # covers: short side 512
    assert pixel_perfect_resolution(image, 512, 512, "Resize and Fill") == 341  # fits inside: 512 × 341
    assert pixel_perfect_resolution(image, 768, 512, "Just Resize") == 512


# ---------------------------------------------------------------- the other model-free modules


def _resized(image: Image.Image, resolution: int) -> np.ndarray:
    """The extension's resize-and-pad with the padding cut off again."""
    rgb = np.asarray(image)
    raw_h, raw_w = rgb.shape[:2]
    k = float(resolution) / float(min(raw_h, raw_w))
    h, w = int(np.round(raw_h * k)), int(np.round(raw_w * k))
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def test_the_new_modules_have_the_extensions_sliders() -> None:
    assert MODULES["blur_gaussian"].threshold_a == ("Sigma", 9.0, 0.01, 64.0, 0.01)
    assert MODULES["scribble_xdog"].threshold_a == ("XDoG Threshold", 32, 1, 64, 0.01)
    assert MODULES["tile_resample"].threshold_a == ("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)
    assert MODULES["tile_resample"].resolution is None
    assert MODULES["tile_colorfix"].threshold_a == ("Variation", 8.0, 3.0, 32.0, 1.0)
    assert MODULES["tile_colorfix+sharp"].threshold_b == ("Sharpness", 1.0, 0.0, 2.0, 0.01)
    for name in ("recolor_luminance", "recolor_intensity"):
        assert MODULES[name].threshold_a == ("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
        assert MODULES[name].resolution is None
    assert MODULES["shuffle"].resolution is None and MODULES["shuffle"].fixed_resolution == 512
    assert MODULES["inpaint"].needs_mask and MODULES["inpaint_only"].needs_mask
    assert module_named("inpaint_global_harmonious", "m").name == "inpaint"
    assert module_named("lineart_standard (from white bg & black line)", "m").name == "lineart_standard"


def test_blur_gaussian_blurs_the_resized_picture_with_sigma_9_by_default() -> None:
    image = _drawing(150, 100)
    ours = np.asarray(preprocess("blur_gaussian", image, resolution=128))
    assert ours.shape == (128, 192, 3)
    assert np.array_equal(ours, cv2.GaussianBlur(_resized(image, 128), (0, 0), 9.0))
    sharper = np.asarray(preprocess("blur_gaussian", image, resolution=128, threshold_a=1.0))
    assert np.array_equal(sharper, cv2.GaussianBlur(_resized(image, 128), (0, 0), 1.0))
    assert sharper.std() > ours.std()  # less blur keeps more contrast


def test_scribble_xdog_draws_white_lines_on_black_where_the_drawing_has_edges() -> None:
    image = _drawing(160, 160)
    lines = np.asarray(preprocess("scribble_xdog", image, resolution=160))
    assert lines.shape == (160, 160, 3)
    assert set(np.unique(lines)) <= {0, 255}
    assert 0.01 < (lines[:, :, 0] > 0).mean() < 0.5
    flat = np.asarray(preprocess("scribble_xdog", Image.new("RGB", (64, 64), (120, 120, 120)), resolution=64))
    assert not flat.any()  # no edges, no lines
    looser = np.asarray(preprocess("scribble_xdog", image, resolution=160, threshold_a=8))
    assert (looser > 0).sum() >= (lines > 0).sum()  # a lower threshold keeps more


def test_shuffle_is_deterministic_per_seed_and_keeps_the_pictures_colours() -> None:
    image = _drawing(96, 64)
    first = np.asarray(preprocess("shuffle", image, seed=7))
    assert first.shape == (512, 768, 3)  # shuffle always runs at 512 (its resolution slider is hidden)
    assert np.array_equal(first, np.asarray(preprocess("shuffle", image, seed=7, resolution=64)))
    other = np.asarray(preprocess("shuffle", image, seed=8))
    assert not np.array_equal(first, other)
    palette = np.array([(240, 230, 200), (30, 90, 160), (200, 20, 20)])  # the drawing's colours
    sample = first.reshape(-1, 3)[::97].astype(int)
    nearest = np.abs(sample[:, None, :] - palette[None, :, :]).sum(axis=2).min(axis=1)
    assert np.median(nearest) < 30  # warped pixels of the picture, not noise


def test_tile_resample_shrinks_by_the_rate_and_keeps_small_rates_as_they_are() -> None:
    image = _drawing(200, 120)
    assert np.array_equal(np.asarray(preprocess("tile_resample", image)), np.asarray(image))
    assert np.array_equal(np.asarray(preprocess("tile_resample", image, threshold_a=1.05)), np.asarray(image))
    half = np.asarray(preprocess("tile_resample", image, threshold_a=2.0))
    assert half.shape == (60, 100, 3)
    assert np.array_equal(half, cv2.resize(np.asarray(image), (100, 60), interpolation=cv2.INTER_AREA))
    assert preprocess("tile_resample", image, threshold_a=50).size == image.size  # out of range: default 1
    for name in ("tile_colorfix", "tile_colorfix+sharp"):
        assert np.array_equal(np.asarray(preprocess(name, image)), np.asarray(image))


def test_recolor_takes_lightness_or_value_with_gamma() -> None:
    image = _drawing(80, 60)
    pixels = np.asarray(image)
    luminance = np.asarray(preprocess("recolor_luminance", image))
    assert luminance.shape == (60, 80, 3) and np.array_equal(luminance[:, :, 0], luminance[:, :, 2])
    assert np.array_equal(luminance[:, :, 0], cv2.cvtColor(pixels, cv2.COLOR_BGR2LAB)[:, :, 0])
    intensity = np.asarray(preprocess("recolor_intensity", image))
    assert np.array_equal(intensity[:, :, 1], pixels.max(axis=2))  # HSV's V is the largest channel
    darker = np.asarray(preprocess("recolor_intensity", image, threshold_a=2.0))
    expected = ((pixels.max(axis=2) / 255.0) ** 2.0 * 255.0).astype(np.uint8)
    assert np.array_equal(darker[:, :, 0], expected)


def test_lineart_standard_finds_dark_lines_on_white() -> None:
    image = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(image).line((10, 64, 118, 64), fill="black", width=3)
    lines = np.asarray(preprocess("lineart_standard", image, resolution=128))
    assert lines.shape == (128, 128, 3)
    assert lines[64, 64, 0] > 100 and lines[10, 64, 0] == 0


def test_inpaint_modules_carry_the_mask_as_alpha_and_need_one() -> None:
    image = _drawing(64, 48)
    mask = Image.new("L", (32, 24), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 15, 23), fill=255)  # the left half, at half size
    for name in ("inpaint", "inpaint_only", "inpaint_global_harmonious"):
        control = preprocess(name, image, mask=mask)
        assert control.mode == "RGBA" and control.size == (64, 48)
        rgba = np.asarray(control)
        assert np.array_equal(rgba[:, :, :3], np.asarray(image))
        assert (rgba[:, :32, 3] == 255).all() and (rgba[:, 32:, 3] == 0).all()
        with pytest.raises(ValidationError) as err:
            preprocess(name, image, field="controlnet.0.module")
        assert err.value.field == "controlnet.0.module"
    shown = np.asarray(display_map("inpaint", preprocess("inpaint", image, mask=mask)))
    assert shown[0, 0, 3] == 128 and shown[0, 63, 3] == 255  # the masked part half transparent


def test_sliders_outside_their_range_fall_back_to_the_defaults() -> None:
    image = _drawing(100, 80)
    default = np.asarray(preprocess("canny", image))
    assert np.array_equal(np.asarray(preprocess("canny", image, threshold_a=-1, threshold_b=-1)), default)
    assert np.array_equal(np.asarray(preprocess("canny", image, resolution=-1)), default)
    assert np.array_equal(np.asarray(preprocess("canny", image, threshold_a=300)), default)
