"""Generation on the tiny SD 1.x model: reproducible seeds, batches, variation seeds, progress,
interruption, hires fix, composable prompts, and parity with a bare diffusers pipeline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from sdfleet.domain import JobKind
from sdfleet.engine.base import GenerationResult
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.errors import Interrupted, ValidationError
from tests.engine.conftest import spec

Run = Callable[..., GenerationResult]


def pixels(result: GenerationResult, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image, dtype=np.int16)


def test_same_spec_twice_gives_identical_pixels_and_another_seed_differs(run: Run) -> None:
    first, second = run(spec()), run(spec())
    assert np.array_equal(pixels(first), pixels(second))
    other = run(spec(seed=4321))
    assert not np.array_equal(pixels(first), pixels(other))
    assert first.images[0].image.size == (32, 32)
    assert first.images[0].seed == 1234


def test_batch_and_iterations_use_seed_plus_i_like_single_images(run: Run) -> None:
    batch = run(spec(seed=100, batch_size=2, n_iter=2))
    assert [g.seed for g in batch.images] == [100, 101, 102, 103]
    for index in (1, 2):
        alone = run(spec(seed=100 + index))
        # a batched UNet call may differ from a single one in the last float bit
        assert np.abs(pixels(batch, index) - pixels(alone)).max() <= 1


def test_seed_minus_one_draws_and_reports_a_seed(run: Run) -> None:
    result = run(spec(seed=-1))
    seed = result.images[0].seed
    assert 0 <= seed < 2**32
    assert f"Seed: {seed}," in result.images[0].infotext
    assert np.array_equal(pixels(result), pixels(run(spec(seed=seed))))


def test_variation_seed_strength_one_is_the_subseed_noise(run: Run) -> None:
    euler = {"sampler_name": "Euler"}
    blended = run(spec(seed=5, subseed=77, subseed_strength=1.0, **euler))
    assert np.abs(pixels(blended) - pixels(run(spec(seed=77, **euler)))).max() <= 1
    half = run(spec(seed=5, subseed=77, subseed_strength=0.5, **euler))
    assert not np.array_equal(pixels(half), pixels(run(spec(seed=5, **euler))))
    assert "Variation seed: 77" in half.images[0].infotext


def test_progress_every_step_with_previews_at_the_asked_interval(run: Run) -> None:
    run(spec(steps=4, preview_every=2))
    steps = run.steps  # type: ignore[attr-defined]
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert {s.total for s in steps} == {4}
    assert [s.step for s in steps if s.preview is not None] == [2, 4]
    assert steps[1].preview is not None and steps[1].preview.mode == "RGB"


def test_interrupt_stops_within_one_step(run: Run) -> None:
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(run.steps) >= 1  # type: ignore[attr-defined]

    with pytest.raises(Interrupted):
        run(spec(steps=6), stop=stop)
    assert len(run.steps) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_produces_the_upscaled_size(run: Run, upscaler: str) -> None:
    result = run(
        spec(
            enable_hr=True,
            hr_scale=2.0,
            hr_upscaler=upscaler,
            hr_second_pass_steps=2,
            hr_denoising_strength=0.6,
        )
    )
    assert result.images[0].image.size == (64, 64)
    assert result.info["steps"] == 2 + 1  # int(2 * 0.6) = 1 hires step
    text = result.images[0].infotext
    assert "Size: 32x32" in text and "Hires upscale: 2.0" in text and f"Hires upscaler: {upscaler}" in text


def test_unknown_hires_upscaler_is_refused_naming_the_field(run: Run) -> None:
    with pytest.raises(ValidationError) as err:
        run(spec(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))
    assert err.value.field == "hr_upscaler"
    assert "Lanczos" in err.value.message and "registered upscaler" in err.value.message


@pytest.mark.parametrize("upscaler", ["R-ESRGAN General 4xV3", "4x-UltraSharp"])
def test_hires_fix_with_a_registered_upscaler_net(run: Run, upscaler: str) -> None:
    """A1111's hires fix with a model upscaler: the first pass decoded, brought up by the net (one ×4 pass,
    then Lanczos down to the ×1.5 target), encoded, and the second pass run on it. The net changes the
    picture against a Lanczos resize of the same first pass."""
    hires = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, hr_denoising_strength=0.5)
    result = run(spec(hr_upscaler=upscaler, **hires))
    assert result.images[0].image.size == (48, 48)
    assert f"Hires upscaler: {upscaler}" in result.images[0].infotext
    lanczos = run(spec(hr_upscaler="Lanczos", **hires))
    ours = np.asarray(result.images[0].image, dtype=np.int16)
    assert np.abs(ours - np.asarray(lanczos.images[0].image, dtype=np.int16)).max() > 0


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("sampler_name", {"sampler_name": "Euler z"}),
        ("scheduler", {"scheduler": "wobbly"}),
        ("sampler_name", {"sampler_name": "DPM fast"}),
    ],
)
def test_unknown_or_unsupported_sampler_names_the_field(
    run: Run, field: str, overrides: dict[str, str]
) -> None:
    with pytest.raises(ValidationError) as err:
        run(spec(**overrides))
    assert err.value.field == field
    assert "Euler a" in err.value.message or "Karras" in err.value.message


@pytest.mark.parametrize(
    ("sampler", "scheduler"),
    [
        ("DPM++ 2M", "automatic"),
        ("DPM++ 2M Karras", "automatic"),
        ("DDIM", "automatic"),
        ("Heun", "Uniform"),
        ("UniPC", "automatic"),
        ("DPM++ 2M SDE", "Karras"),
        ("k_dpm_2", "Exponential"),
    ],
)
def test_a1111_samplers_run_and_are_named_in_the_infotext(run: Run, sampler: str, scheduler: str) -> None:
    result = run(spec(sampler_name=sampler, scheduler=scheduler, steps=2))
    assert np.isfinite(pixels(result)).all()
    text = result.images[0].infotext
    expected = {"DPM++ 2M Karras": "DPM++ 2M", "k_dpm_2": "DPM2"}.get(sampler, sampler)
    assert f"Sampler: {expected}," in text


def test_samplers_whose_packages_are_missing_are_refused_clearly(run: Run) -> None:
    from sdfleet.engine.sd.samplers import missing_backends

    if not missing_backends("LMSDiscreteScheduler"):
        pytest.skip("scipy is installed, LMS runs here")
    with pytest.raises(ValidationError) as err:
        run(spec(sampler_name="LMS"))
    assert err.value.field == "sampler_name" and "scipy" in err.value.message


def test_and_composable_prompt_differs_from_its_first_part(run: Run) -> None:
    both = run(spec(prompt="a cat AND a red dog :0.8", sampler_name="Euler"))
    first = run(spec(prompt="a cat", sampler_name="Euler"))
    assert not np.array_equal(pixels(both), pixels(first))


def test_engine_matches_a_bare_diffusers_pipeline(engine: DiffusersEngine) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from sdfleet.a1111 import parse_prompt

    model = engine.store.get(engine.default_model)  # type: ignore[arg-type]
    ours = engine.generate(
        JobKind.TXT2IMG,
        spec(sampler_name="Euler", steps=3, guidance_rescale=0.0),
        lambda s: None,
        lambda: False,
    )
    encoder = model.encoder
    cond, _ = encoder.encode(parse_prompt("a photo of a cat", 3).subprompts[0].schedule[0].chunks)
    uncond, _ = encoder.encode(parse_prompt("blurry", 3).subprompts[0].schedule[0].chunks)
    pipe = StableDiffusionPipeline(**model.pipe.components)
    pipe.scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        theirs = pipe(
            prompt_embeds=cond.embeds,
            negative_prompt_embeds=uncond.embeds,
            latents=noise,
            num_inference_steps=3,
            guidance_scale=5.0,
            height=32,
            width=32,
            output_type="np",
        ).images[0]
    diff = np.abs(pixels(ours) - np.round(theirs * 255).astype(np.int16))
    assert diff.max() <= 1
