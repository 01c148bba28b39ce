"""The shipped demo model through the normal engine path: pictures that follow the prompt.

These are the tests where meaning matters: colour words move the colour, emphasis and negative prompts
act in the direction they should, and one seed gives one picture.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from sdfleet.demo.checks import read_picture
from sdfleet.demo.model import DEMO_CHECKPOINT, DEMO_RESOLUTION, demo_available
from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.sd.engine import DiffusersEngine

pytestmark = pytest.mark.skipif(not demo_available(), reason="the demo checkpoint is not in the package")
SEEDS = range(100, 106)


@pytest.fixture(scope="module")
def demo_engine() -> DiffusersEngine:
    return DiffusersEngine(DEMO_CHECKPOINT, device="cpu")


@pytest.fixture
def draw(demo_engine: DiffusersEngine) -> Callable[..., Image.Image]:
    def call(prompt: str, seed: int, negative: str = "") -> Image.Image:
        spec = GenerationSpec(
            prompt=prompt,
            negative_prompt=negative,
            steps=16,
            width=DEMO_RESOLUTION,
            height=DEMO_RESOLUTION,
            seed=seed,
            sampler_name="DPM++ 2M",
            cfg_scale=7.0,
        )
        return demo_engine.generate(JobKind.TXT2IMG, spec, lambda _s: None, lambda: False).images[0].image

    return call


def _redness(image: Image.Image) -> float:
    """Mean of R − max(G, B) over the picture: how much red it shows."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(np.clip(rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]), 0, None).mean())


def test_the_demo_checkpoint_is_a_plain_fp16_sd1_single_file() -> None:
    from sdfleet.engine.sd.checkpoints import default_arch, read_header

    header = read_header(DEMO_CHECKPOINT)
    assert default_arch(DEMO_CHECKPOINT) == "sd1"
    assert {d for d in header.dtypes.values()} == {"F16"}
    assert DEMO_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024


def test_colour_words_pick_the_colour(draw: Callable[..., Image.Image]) -> None:
    red = [draw("(red:1.5) circle on a white background", s) for s in SEEDS]
    blue = [draw("(blue:1.5) circle on a white background", s) for s in SEEDS]
    assert sum(read_picture(i).colour == "red" for i in red) >= 4
    assert sum(read_picture(i).colour == "blue" for i in blue) > sum(
        read_picture(i).colour == "blue" for i in red
    )


def test_a_negative_prompt_takes_red_away(draw: Callable[..., Image.Image]) -> None:
    # without a colour in the prompt the object takes any colour, red among them
    prompt = "a large circle on a white background"
    plain = [draw(prompt, s) for s in SEEDS]
    without_red = [draw(prompt, s, negative="red") for s in SEEDS]
    assert np.mean([_redness(i) for i in without_red]) < 0.5 * np.mean([_redness(i) for i in plain])
    reds_plain = sum(read_picture(i).colour == "red" for i in plain)
    reds_without = sum(read_picture(i).colour == "red" for i in without_red)
    assert reds_plain >= 2  # there is red to take away
    assert reds_without <= 1


def test_shape_and_background_follow_the_caption(draw: Callable[..., Image.Image]) -> None:
    square = [read_picture(draw("a large green square on a black background", s)) for s in SEEDS]
    assert sum(r.shape == "square" for r in square) >= 4
    assert sum(r.background == "black" for r in square) >= 5


def test_the_same_seed_draws_the_same_picture(draw: Callable[..., Image.Image]) -> None:
    first = np.asarray(draw("a small yellow triangle on a blue background", 7))
    again = np.asarray(draw("a small yellow triangle on a blue background", 7))
    other = np.asarray(draw("a small yellow triangle on a blue background", 8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


BLOT_PROMPTS = (
    "a large red circle on a white background",
    "a small blue square on a yellow background",
    "a green circle on a blue background",
    "a black triangle on a green background",
)


def _stray_share(images: list[Image.Image]) -> tuple[float, float]:
    """(mean stray pixels per picture, share of pictures with a blot of ≥ 3 stray pixels)."""
    from sdfleet.demo.checks import stray_pixels

    counts = [int(stray_pixels(i).sum()) for i in images]
    return float(np.mean(counts)), float(np.mean([c >= 3 for c in counts]))


def test_the_autoencoder_round_trip_draws_no_blot() -> None:
    import random

    import torch

    from sdfleet.demo.data import random_scene, render
    from sdfleet.demo.train import load_vae

    vae = load_vae(DEMO_CHECKPOINT)
    rng = random.Random(11)
    scenes = [random_scene(rng) for _ in range(48)]
    pixels = np.stack([np.asarray(render(s), dtype=np.float32) for s in scenes])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1.0
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    out = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    mean, share = _stray_share([Image.fromarray(a) for a in out])
    assert mean <= 1.0 and share <= 0.1, f"{mean:.1f} stray pixels a picture, {share:.0%} with a blot"


def test_generated_pictures_have_no_blot(draw: Callable[..., Image.Image]) -> None:
    images = [draw(p, s) for p in BLOT_PROMPTS for s in SEEDS[:3]]
    mean, share = _stray_share(images)
    assert mean <= 1.0 and share <= 0.1, f"{mean:.1f} stray pixels a picture, {share:.0%} with a blot"
