"""Properties of the A1111 request mapping (:mod:`sdfleet.a1111.mapping`): any txt2img/img2img body either
maps to a :class:`~sdfleet.domain.GenerationSpec` or is refused with a 4xx-class error naming a field, never
another exception; the numbers a client sets come through; an infotext written for a request and read back
as the ``infotext`` field gives the same spec."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from sdfleet.a1111.api import Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.infotext import InfotextParams, format_infotext
from sdfleet.a1111.mapping import check_request_sizes, map_request
from sdfleet.a1111.samplers import SAMPLERS
from sdfleet.config import Limits
from sdfleet.domain import GenerationSpec, JobKind, ModelKind, ModelRecord
from sdfleet.errors import SdfleetError

FAST = settings(max_examples=200, deadline=None)

DREAMY = ModelRecord("dreamy", ModelKind.CHECKPOINT, "sd1", "/models/dreamy.safetensors", "a" * 64, 10)
VAE = ModelRecord("vae-ft-mse", ModelKind.VAE, None, "/models/vae-ft-mse.safetensors", "e" * 64, 1)
CATALOG = Catalog(checkpoints=[DREAMY], vaes=[VAE])
LIMITS = Limits()

NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 1e308, -0.0]),
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=20),  # lone surrogates, NUL
    st.sampled_from(["Euler a", "DPM++ 2M Karras", "dreamy", "vae-ft-mse", "None", "Automatic", "Latent"]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)

FIELDS = [
    "prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
    "seed_resize_from_w", "sampler_name", "scheduler", "batch_size", "n_iter", "steps", "cfg_scale", "width",
    "height", "restore_faces", "tiling", "eta", "denoising_strength", "s_churn", "s_noise", "override_settings",
    "refiner_checkpoint", "refiner_switch_at", "disable_extra_networks", "force_task_id", "infotext",
    "sampler_index", "script_name", "script_args", "send_images", "alwayson_scripts",
    # txt2img
    "enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
    "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
    "hr_negative_prompt",
    # img2img
    "init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur", "inpainting_fill",
    "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert", "include_init_images",
]  # fmt: skip

TYPED: dict[str, st.SearchStrategy[Any]] = {
    "prompt": TEXT | st.lists(TEXT, max_size=3),
    "styles": st.lists(TEXT, max_size=3),
    "steps": st.integers(-5, 200),
    "width": st.integers(-8, 4096),
    "height": st.integers(-8, 4096),
    "batch_size": st.integers(-2, 16),
    "n_iter": st.integers(-2, 16),
    "override_settings": st.dictionaries(
        st.sampled_from(["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "eta_ancestral", "x"]),
        SCALAR,
        max_size=3,
    ),
    "init_images": st.lists(st.sampled_from(["", "aGVsbG8=", "data:image/png;base64,AAAA", "x"]), max_size=2),
    "infotext": st.sampled_from(
        ["", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64"]
    )
    | TEXT,
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with some of A1111's fields: values of the right type or of any JSON type."""
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=10))
    return {name: draw(TYPED[name] | VALUE if name in TYPED else VALUE) for name in names}


def _map(kind: JobKind, model: type[ProcessingRequest], body: dict[str, Any]) -> GenerationSpec | None:
    """What the route does with a body: validate, bound the sizes, map. None when refused as a 4xx."""
    try:
        request = model.model_validate(body)
    except PydanticValidationError:
        return None
    try:
        check_request_sizes(request, LIMITS)
        mapped = map_request(kind, request, options={}, catalog=CATALOG, rng=random.Random(3))
    except SdfleetError as exc:
        refusal: SdfleetError | None = exc
    else:
        return mapped.spec
    assert refusal is not None and 400 <= refusal.status < 500 and refusal.message, refusal
    return None


@FAST
@given(body=bodies())
def test_any_txt2img_body_maps_or_is_refused(body: dict[str, Any]) -> None:
    spec = _map(JobKind.TXT2IMG, Txt2ImgRequest, body)
    if spec is not None:
        assert isinstance(spec, GenerationSpec)


@FAST
@given(body=bodies())
def test_any_img2img_body_maps_or_is_refused(body: dict[str, Any]) -> None:
    spec = _map(JobKind.IMG2IMG, Img2ImgRequest, body)
    if spec is not None:
        assert isinstance(spec, GenerationSpec)


@FAST
@given(
    steps=st.integers(1, 150),
    cfg=st.floats(1, 30, allow_nan=False),
    width=st.integers(1, 32).map(lambda n: n * 64),
    height=st.integers(1, 32).map(lambda n: n * 64),
    seed=st.integers(0, 2**32 - 2),
    batch=st.integers(1, 8),
    sampler=st.sampled_from([s.name for s in SAMPLERS]),
)
def test_the_numbers_a_client_sets_come_through(
    steps: int, cfg: float, width: int, height: int, seed: int, batch: int, sampler: str
) -> None:
    body = {"prompt": "a cat", "steps": steps, "cfg_scale": cfg, "width": width, "height": height}
    body |= {"seed": seed, "batch_size": batch, "sampler_name": sampler}
    spec = _map(JobKind.TXT2IMG, Txt2ImgRequest, body)
    assert spec is not None
    assert (spec.steps, spec.width, spec.height, spec.seed, spec.batch_size) == (
        steps,
        width,
        height,
        seed,
        batch,
    )
    assert math.isclose(spec.cfg_scale, cfg) and spec.sampler_name == sampler


PROMPT_TEXT = st.text(alphabet="abcdefghij ,()[]:.0123456789", min_size=1, max_size=30).filter(
    lambda t: t.strip() == t and t
)


@FAST
@given(
    prompt=PROMPT_TEXT,
    negative=st.just("") | PROMPT_TEXT,
    steps=st.integers(1, 150),
    cfg=st.integers(1, 30).map(float),
    seed=st.integers(0, 2**32 - 2),
    width=st.integers(1, 16).map(lambda n: n * 64),
    height=st.integers(1, 16).map(lambda n: n * 64),
    sampler=st.sampled_from([s.name for s in SAMPLERS]),
)
def test_an_infotext_written_then_given_back_gives_the_same_spec(
    prompt: str, negative: str, steps: int, cfg: float, seed: int, width: int, height: int, sampler: str
) -> None:
    """A1111's "send to txt2img": the infotext of a picture, passed as ``infotext``, reproduces its request."""
    direct = {"prompt": prompt, "negative_prompt": negative, "steps": steps, "cfg_scale": cfg, "seed": seed}
    direct |= {"width": width, "height": height, "sampler_name": sampler}
    expected = _map(JobKind.TXT2IMG, Txt2ImgRequest, direct)
    assert expected is not None
    text = format_infotext(
        InfotextParams(
            prompt=prompt,
            negative_prompt=negative,
            steps=steps,
            sampler=sampler,
            cfg_scale=cfg,
            seed=seed,
            width=width,
            height=height,
        )
    )
    from_infotext = _map(JobKind.TXT2IMG, Txt2ImgRequest, {"infotext": text})
    assert from_infotext is not None
    for name in (
        "prompt",
        "negative_prompt",
        "steps",
        "cfg_scale",
        "seed",
        "width",
        "height",
        "sampler_name",
    ):
        assert getattr(from_infotext, name) == getattr(expected, name), name


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**64, "\ud800", "a\x00b"])
@pytest.mark.parametrize(
    "name", ["steps", "cfg_scale", "width", "seed", "denoising_strength", "sampler_name", "prompt"]
)
def test_poison_values_are_refused_or_mapped_never_raised(name: str, value: object) -> None:
    for kind, model in ((JobKind.TXT2IMG, Txt2ImgRequest), (JobKind.IMG2IMG, Img2ImgRequest)):
        spec = _map(kind, model, {name: value, "init_images": []})
        if spec is not None:
            dumped = spec.model_dump()
            assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in dumped.values()), dumped
