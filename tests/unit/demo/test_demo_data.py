"""The demo world: deterministic pictures, captions in plain English, and checks that read them right."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sdfleet.demo.checks import read_picture
from sdfleet.demo.data import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    TRAIN_COMBOS,
    caption,
    held_out_set,
    random_scene,
    render,
    training_set,
)
from sdfleet.demo.evaluate import evaluate


def test_same_seed_same_pictures_and_captions() -> None:
    first = [(np.asarray(render(s)).tobytes(), c) for s, c in training_set(20, seed=3)]
    again = [(np.asarray(render(s)).tobytes(), c) for s, c in training_set(20, seed=3)]
    other = [c for _, c in training_set(20, seed=4)]
    assert first == again
    assert [c for _, c in first] != other


def test_held_out_combinations_never_reach_training_but_their_words_do() -> None:
    assert len(HELD_OUT) == 12
    assert not HELD_OUT & set(TRAIN_COMBOS)
    seen = {s.combo for s, _ in training_set(3000, seed=0)}
    assert not seen & HELD_OUT
    for colour, shape, background in HELD_OUT:
        assert any(c == colour for c, _, _ in TRAIN_COMBOS)
        assert any(s == shape for _, s, _ in TRAIN_COMBOS)
        assert any(b == background for _, _, b in TRAIN_COMBOS)


def test_captions_say_what_is_drawn() -> None:
    scene = random_scene(random.Random(1), ("red", "circle", "yellow"))
    assert caption(scene) == f"a {scene.size} red circle on a yellow background"
    assert caption(scene, 1) == "a red circle on a yellow background"
    picture = np.asarray(render(scene), dtype=np.int32)
    corner = picture[0, 0]
    assert np.abs(corner - np.array(COLOURS["yellow"])).max() <= 12
    centre = picture[round(scene.cy), round(scene.cx)]
    assert np.abs(centre - np.array(COLOURS["red"])).max() <= 12


def test_checks_read_the_datasets_own_pictures_at_least_99_percent_right() -> None:
    result = evaluate(model=None, per_combo=10, seed=5, ground_truth=True)
    assert result.images == 120
    assert min(result.accuracy.values()) >= 0.99, result.accuracy
    rng = random.Random(11)
    wrong = 0
    for _ in range(600):
        scene = random_scene(rng, (rng.choice(list(COLOURS)), rng.choice(SHAPES), "x"))
        if scene.background == "x":  # pick any background other than the object's colour
            background = rng.choice([c for c in COLOURS if c != scene.colour])
            scene = random_scene(rng, (scene.colour, scene.shape, background))
        reading = read_picture(render(scene))
        wrong += (reading.colour, reading.shape, reading.background) != (
            scene.colour,
            scene.shape,
            scene.background,
        )
    assert wrong <= 6


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_check_tolerates_blur(shape: str) -> None:
    from PIL import ImageFilter

    scene = random_scene(random.Random(2), ("blue", shape, "white"))
    blurred = render(scene).resize((32, 32)).resize((64, 64)).filter(ImageFilter.GaussianBlur(1.2))
    assert read_picture(blurred).shape == shape


def test_an_empty_picture_has_no_object() -> None:
    from PIL import Image

    reading = read_picture(Image.new("RGB", (64, 64), COLOURS["green"]))
    assert (reading.background, reading.colour, reading.shape) == ("green", None, None)


def test_held_out_set_is_deterministic() -> None:
    assert [c for _, c in held_out_set(2, 0)] == [c for _, c in held_out_set(2, 0)]
