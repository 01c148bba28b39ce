"""The stray-colour check (:func:`sdfleet.demo.checks.stray_pixels`): none on the dataset's own
pictures, and a small magenta blot at an object's corner is found."""

from __future__ import annotations

import random

import numpy as np

from sdfleet.demo.checks import stray_pixels
from sdfleet.demo.data import random_scene, render


def test_the_datasets_own_pictures_have_no_stray_pixels() -> None:
    rng = random.Random(5)
    counts = [int(stray_pixels(render(random_scene(rng))).sum()) for _ in range(200)]
    assert max(counts) == 0  # anti-aliased edges are blends of the two colours, not strays


def test_a_magenta_blot_at_the_objects_corner_is_found() -> None:
    scene = random_scene(random.Random(9))
    picture = render(scene)
    pixels = np.asarray(picture).copy()
    top, left = int(scene.cy - scene.extent / 2), int(scene.cx - scene.extent / 2)
    pixels[top : top + 3, left : left + 3] = (230, 40, 230)
    from PIL import Image

    stray = stray_pixels(Image.fromarray(pixels))
    assert 6 <= int(stray.sum()) <= 9
    ys, xs = np.nonzero(stray)
    assert top <= ys.min() and ys.max() < top + 3 and left <= xs.min() and xs.max() < left + 3
