"""The model-free ControlNet preprocessors against the A1111 ControlNet extension's algorithm, written out
here step by step as the extension spells it (short side to the processor resolution, cubic up / area down,
edge padding to multiples of 64, ``cv2.Canny``, the padding cut off), on a real photograph (scikit-image's
public-domain astronaut) and on drawn pictures of odd sizes; the module table's sliders; Pixel Perfect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdfleet.engine.controlnet.preprocess import pixel_perfect_resolution, preprocess
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
