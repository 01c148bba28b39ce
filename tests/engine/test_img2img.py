"""img2img and inpainting on the tiny SD 1.x model, and infotexts that parse back to the spec."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdfleet.a1111 import InfotextParams
from sdfleet.domain import JobKind
from sdfleet.engine.base import GenerationResult
from sdfleet.engine.sd.images import binary_mask, blur_mask
from tests.engine.conftest import spec

Run = Callable[..., GenerationResult]


def source() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), mode="RGB")


def square_mask() -> Image.Image:
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((12, 12, 19, 19), fill=255)
    return mask


def test_img2img_strength_zero_returns_the_input(run: Run) -> None:
    image = source()
    result = run(
        spec(init_images=[], denoising_strength=0.0).model_copy(update={"init_images": [image]}),
        kind=JobKind.IMG2IMG,
    )
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(image))


def test_img2img_changes_the_image_and_is_reproducible(run: Run) -> None:
    s = spec(denoising_strength=0.75, steps=4).model_copy(update={"init_images": [source()]})
    first, second = run(s, kind=JobKind.IMG2IMG), run(s, kind=JobKind.IMG2IMG)
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(second.images[0].image))
    assert not np.array_equal(np.asarray(first.images[0].image), np.asarray(source()))
    assert len(run.steps) == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(("full_res", "fill"), [(False, 1), (True, 0), (False, 2)])
def test_inpainting_leaves_pixels_outside_the_blurred_mask_unchanged(
    run: Run, full_res: bool, fill: int
) -> None:
    image = source()
    s = spec(
        denoising_strength=0.9,
        steps=3,
        mask_blur=2,
        inpaint_full_res=full_res,
        inpaint_full_res_padding=4,
        inpainting_fill=fill,
    )
    result = run(s.model_copy(update={"init_images": [image], "mask": square_mask()}), kind=JobKind.IMG2IMG)
    out = np.asarray(result.images[0].image)
    assert out.shape == (32, 32, 3)
    outside = np.asarray(blur_mask(binary_mask(square_mask()), 2)) == 0
    assert np.array_equal(out[outside], np.asarray(image)[outside])
    inside = np.asarray(square_mask()) == 255
    assert not np.array_equal(out[inside], np.asarray(image)[inside])


def test_inverted_mask_repaints_the_outside(run: Run) -> None:
    image = source()
    s = spec(denoising_strength=0.9, steps=3, mask_blur=0, inpainting_mask_invert=True)
    result = run(s.model_copy(update={"init_images": [image], "mask": square_mask()}), kind=JobKind.IMG2IMG)
    out, original = np.asarray(result.images[0].image), np.asarray(image)
    assert np.array_equal(out[12:20, 12:20], original[12:20, 12:20])
    assert "Mask mode: Inpaint not masked" in result.images[0].infotext


def test_a_bad_init_image_is_a_validation_error(run: Run) -> None:
    from sdfleet.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        run(spec(init_images=["data:image/png;base64,bm90IGFuIGltYWdl"]), kind=JobKind.IMG2IMG)
    assert err.value.field == "init_images"


def test_every_infotext_parses_back_to_the_spec(run: Run) -> None:
    s = spec(
        prompt="a (cat:1.2), [dog:fox:1] <lora:tinykohya:0.7>",
        negative_prompt="ugly, blurry: bad",
        seed=77,
        subseed=9,
        subseed_strength=0.25,
        clip_skip=2,
        cfg_scale=6.5,
        batch_size=2,
        sampler_name="DPM++ 2M",
    )
    result = run(s)
    for index, image in enumerate(result.images):
        params = InfotextParams.from_infotext(image.infotext)
        assert params.prompt == s.prompt and params.negative_prompt == s.negative_prompt
        assert (params.steps, params.sampler, params.schedule_type) == (2, "DPM++ 2M", "Karras")
        assert params.cfg_scale == 6.5 and params.seed == 77 == image.seed
        assert (params.variation_seed, params.variation_seed_strength) == (9 + index, 0.25)
        assert (params.width, params.height, params.clip_skip) == (32, 32, 2)
        assert params.model == "tiny-sd1" and params.model_hash is not None and len(params.model_hash) == 10
        assert set(params.lora_hashes) == {"tinykohya"} and params.rng == "CPU"
        assert params.version is not None and params.version.startswith("sdfleet ")
    inpaint = spec(denoising_strength=0.5, mask_blur=3, inpaint_full_res=True, inpainting_fill=2)
    out = run(
        inpaint.model_copy(update={"init_images": [source()], "mask": square_mask()}), kind=JobKind.IMG2IMG
    )
    params = InfotextParams.from_infotext(out.images[0].infotext)
    assert params.denoising_strength == 0.5
    assert dict(params.extra) == {
        "Mask blur": "3",
        "Masked content": "latent noise",
        "Inpaint area": "Only masked",
        "Masked area padding": "32",
    }


def test_inpainting_model_runs_txt2img_and_inpainting(run: Run) -> None:
    plain = run(spec(model="inpainting"))
    assert plain.images[0].image.size == (32, 32)
    image = source()
    s = spec(model="inpainting", denoising_strength=1.0, steps=2, mask_blur=0)
    result = run(s.model_copy(update={"init_images": [image], "mask": square_mask()}), kind=JobKind.IMG2IMG)
    out, original = np.asarray(result.images[0].image), np.asarray(image)
    outside = np.asarray(square_mask()) == 0
    assert np.array_equal(out[outside], original[outside])


def test_vae_override_changes_the_decode_and_is_named_in_the_infotext(run: Run) -> None:
    base = run(spec())
    other = run(spec(vae="tinyvae"))
    assert not np.array_equal(np.asarray(base.images[0].image), np.asarray(other.images[0].image))
    params = InfotextParams.from_infotext(other.images[0].infotext)
    assert params.vae == "tinyvae" and params.vae_hash is not None and len(params.vae_hash) == 10
    assert np.array_equal(np.asarray(base.images[0].image), np.asarray(run(spec()).images[0].image))
