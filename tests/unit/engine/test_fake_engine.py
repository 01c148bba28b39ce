"""FakeEngine, the engine's test double: deterministic pictures from seeds, A1111 batch seeds,
progress per step, interrupts between steps, injected failures, and its test-double label."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import threading

import pytest
from PIL import Image

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine import load_engine
from sdfleet.engine.base import StepInfo
from sdfleet.engine.fake import PADDING_KEY, FakeEngine
from sdfleet.errors import ConfigError, EngineError, Interrupted


def run(engine: FakeEngine, **params: object) -> tuple[list[Image.Image], list[int], list[StepInfo]]:
    steps: list[StepInfo] = []
    result = engine.generate(
        JobKind.TXT2IMG, GenerationSpec.model_validate(params), steps.append, lambda: False
    )
    return [g.image for g in result.images], [g.seed for g in result.images], steps


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    engine = FakeEngine(step_seconds=0)
    (a,), _, _ = run(engine, prompt="a castle on a hill", seed=1234, steps=2, width=96, height=64)
    (b,), _, _ = run(
        FakeEngine(step_seconds=0), prompt="a castle on a hill", seed=1234, steps=2, width=96, height=64
    )
    (c,), _, _ = run(engine, prompt="a castle on a hill", seed=1235, steps=2, width=96, height=64)
    assert a.size == (96, 64)
    assert a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_batch_seeds_follow_a1111_and_random_seed_is_drawn_once() -> None:
    engine = FakeEngine(step_seconds=0)
    images, seeds, steps = run(engine, seed=100, steps=3, width=64, height=64, batch_size=2, n_iter=3)
    assert seeds == [100, 101, 102, 103, 104, 105]
    assert len(images) == 6
    assert len({img.tobytes() for img in images}) == 6
    assert [s.step for s in steps] == list(range(1, 10))
    assert {s.total for s in steps} == {9}

    _, random_seeds, _ = run(engine, seed=-1, steps=1, width=64, height=64, batch_size=3)
    first = random_seeds[0]
    assert first >= 0
    assert random_seeds == [first, first + 1, first + 2]


def test_infotext_is_a1111_style_and_says_it_is_a_test_double() -> None:
    engine = FakeEngine(step_seconds=0)
    spec = GenerationSpec(prompt="a cat", negative_prompt="blurry", seed=9, steps=4, width=64, height=128)
    result = engine.generate(JobKind.TXT2IMG, spec, lambda _: None, lambda: False)
    lines = result.images[0].infotext.split("\n")
    assert lines[0] == "a cat"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 4, Sampler: Euler a, ")
    assert "Seed: 9, Size: 64x128" in lines[2]
    assert lines[2].endswith('Engine: "fake (test double, not a model)"')
    assert "test double" in (FakeEngine.__doc__ or "").lower()
    assert engine.capabilities().gpu_name == "FakeEngine (test double)"


def test_steps_take_step_seconds() -> None:
    engine = FakeEngine(step_seconds=0.01)
    result = engine.generate(
        JobKind.TXT2IMG, GenerationSpec(steps=10, width=64, height=64), lambda _: None, lambda: False
    )
    assert float(str(result.info["seconds"])) >= 0.1


def test_should_stop_interrupts_between_steps() -> None:
    engine = FakeEngine(step_seconds=0.001)
    seen: list[int] = []
    with pytest.raises(Interrupted):
        engine.generate(
            JobKind.TXT2IMG,
            GenerationSpec(steps=50, width=64, height=64),
            lambda info: seen.append(info.step),
            lambda: len(seen) >= 5,
        )
    assert seen == [1, 2, 3, 4, 5]


def test_stop_from_another_thread_is_seen_at_the_next_step() -> None:
    engine = FakeEngine(step_seconds=0.01)
    stop = threading.Event()
    seen: list[int] = []

    def on_step(info: StepInfo) -> None:
        seen.append(info.step)
        if info.step == 3:
            threading.Thread(target=stop.set).start()

    with pytest.raises(Interrupted):
        engine.generate(JobKind.TXT2IMG, GenerationSpec(steps=100, width=64, height=64), on_step, stop.is_set)
    assert 3 <= len(seen) <= 5


@pytest.mark.parametrize(("fail_with", "retryable"), [("retryable", True), ("fatal", False)])
def test_fail_every_injects_engine_errors(fail_with: str, retryable: bool) -> None:
    engine = FakeEngine(step_seconds=0, fail_every=2, fail_with=fail_with)  # type: ignore[arg-type]
    spec = GenerationSpec(steps=2, width=64, height=64)
    engine.generate(JobKind.TXT2IMG, spec, lambda _: None, lambda: False)
    with pytest.raises(EngineError) as caught:
        engine.generate(JobKind.TXT2IMG, spec, lambda _: None, lambda: False)
    assert caught.value.retryable is retryable
    engine.generate(JobKind.TXT2IMG, spec, lambda _: None, lambda: False)
    with pytest.raises(EngineError):
        engine.generate(JobKind.TXT2IMG, spec, lambda _: None, lambda: False)
    assert engine.calls == 4


def test_failure_can_come_mid_job_or_be_a_given_error() -> None:
    boom = EngineError("out of memory", retryable=True)
    engine = FakeEngine(step_seconds=0, fail_every=1, fail_with=boom, fail_at_step=3)
    seen: list[int] = []
    with pytest.raises(EngineError) as caught:
        engine.generate(
            JobKind.TXT2IMG,
            GenerationSpec(steps=10, width=64, height=64),
            lambda i: seen.append(i.step),
            lambda: False,
        )
    assert caught.value is boom
    assert seen == [1, 2, 3]


def test_padding_and_previews_and_loaded_models() -> None:
    engine = FakeEngine(step_seconds=0, padding_bytes=5000, cache_size=2)
    spec = GenerationSpec(steps=4, width=64, height=64, preview_every=2, model="dreamy-v1")
    previews: list[StepInfo] = []
    result = engine.generate(
        JobKind.TXT2IMG, spec, lambda i: previews.append(i) if i.preview else None, lambda: False
    )
    assert len(result.images[0].image.info[PADDING_KEY]) == 5000
    assert [p.step for p in previews] == [2, 4]
    assert previews[0].preview is not None
    assert max(previews[0].preview.size) <= 64
    assert engine.loaded_models() == ["dreamy-v1", "fake"]
    engine.generate(
        JobKind.TXT2IMG, spec.model_copy(update={"model": "other"}), lambda _: None, lambda: False
    )
    assert engine.loaded_models() == ["other", "dreamy-v1"]


def test_hires_fix_renders_the_upscaled_size_and_counts_both_passes() -> None:
    engine = FakeEngine(step_seconds=0)
    steps: list[StepInfo] = []
    result = engine.generate(
        JobKind.TXT2IMG,
        GenerationSpec(steps=4, width=64, height=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3),
        steps.append,
        lambda: False,
    )
    assert result.images[0].image.size == (128, 128)
    assert steps[-1].step == steps[-1].total == 7


def _data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize("invert", [False, True])
def test_inpainting_changes_only_the_masked_area(invert: bool) -> None:
    """White in the mask is repainted, black kept (swapped by inpainting_mask_invert); the
    engine advertises inpainting and hires so such jobs reach it."""
    source = Image.new("RGB", (64, 64), (20, 40, 230))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half
    spec = GenerationSpec(
        prompt="sun",
        seed=3,
        steps=1,
        width=64,
        height=64,
        init_images=[_data_url(source)],
        mask=_data_url(mask.convert("RGB")),
        mask_blur=0,
        denoising_strength=1.0,
        inpainting_mask_invert=invert,
    )
    engine = FakeEngine(step_seconds=0)
    [out] = engine.generate(JobKind.IMG2IMG, spec, lambda _: None, lambda: False).images
    left, right = out.image.getpixel((8, 32)), out.image.getpixel((56, 32))
    kept, painted = (left, right) if invert else (right, left)
    assert kept == (20, 40, 230)
    assert painted != (20, 40, 230)
    assert {"inpaint", "hires"} <= set(engine.capabilities().features)


def test_an_unreadable_mask_is_a_fatal_error() -> None:
    spec = GenerationSpec(
        prompt="x",
        steps=1,
        width=64,
        height=64,
        init_images=[_data_url(Image.new("RGB", (8, 8)))],
        mask="bm90",
    )
    with pytest.raises(EngineError, match="mask") as info:
        FakeEngine(step_seconds=0).generate(JobKind.IMG2IMG, spec, lambda _: None, lambda: False)
    assert not info.value.retryable


def test_load_engine_builds_the_fake_and_refuses_unknown_engines() -> None:
    engine = load_engine("fake", model="m", device=None, fake_step_seconds=0.5)
    assert isinstance(engine, FakeEngine)
    assert engine.step_seconds == 0.5
    assert engine.loaded_models() == ["m"]
    with pytest.raises(ConfigError, match="unknown engine"):
        load_engine("tensorrt", model=None, device=None, fake_step_seconds=0.0)


def test_engine_and_worker_packages_do_not_import_torch() -> None:
    code = (
        "import sys, sdfleet.engine, sdfleet.engine.fake, sdfleet.worker.runner; "
        "sys.exit(1 if {'torch', 'diffusers'} & set(sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
