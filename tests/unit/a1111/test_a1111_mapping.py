"""A1111 request → GenerationSpec, pure: defaults, seeds, samplers, settings, infotext, aliases, info."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sdfleet.a1111.api import Img2ImgRequest, Txt2ImgRequest
from sdfleet.a1111.catalog import Catalog, checkpoint_title
from sdfleet.a1111.info import MappedRequest, OutputRecord, build_info
from sdfleet.a1111.mapping import map_request
from sdfleet.a1111.options import validate_option_updates
from sdfleet.domain import JobKind, ModelKind, ModelRecord
from sdfleet.errors import NotFound, ValidationError

SHA = "0123456789abcdef" * 4
DREAMY = ModelRecord(
    "sd15/dreamy", ModelKind.CHECKPOINT, "sd1", "/models/sd15/dreamy_v2.safetensors", SHA, 10
)
OTHER = ModelRecord(
    "other", ModelKind.CHECKPOINT, "sd1", "https://x.org/other.safetensors?token=1", "f" * 64, 1
)
VAE = ModelRecord("vae-ft-mse", ModelKind.VAE, None, "/models/vae-ft-mse-840000.safetensors", "e" * 64, 1)
CATALOG = Catalog(checkpoints=[DREAMY, OTHER], vaes=[VAE])


def txt2img(options: dict[str, Any] | None = None, **body: Any) -> MappedRequest:
    return map_request(
        JobKind.TXT2IMG,
        Txt2ImgRequest.model_validate(body),
        options=options or {},
        catalog=CATALOG,
        rng=random.Random(7),
    )


@pytest.mark.parametrize(
    "alias",
    [
        "sd15/dreamy",
        "sd15/dreamy [0123456789]",
        "sd15/dreamy [deadbeef00]",  # A1111 titles from another install: the name decides
        "sd15_dreamy",
        "dreamy_v2.safetensors",
        "dreamy_v2",
        "sd15/dreamy.safetensors",
        "0123456789",
        SHA,
    ],
)
def test_checkpoint_aliases(alias: str) -> None:
    assert CATALOG.checkpoint(alias) is DREAMY


def test_checkpoint_title_and_unknown_names() -> None:
    assert checkpoint_title(DREAMY) == "sd15/dreamy [0123456789]"
    assert CATALOG.checkpoint("other.safetensors") is OTHER  # the query string is not part of the file name
    assert CATALOG.checkpoint("nothing") is None
    assert CATALOG.checkpoint("") is None
    assert CATALOG.vae("vae-ft-mse-840000.safetensors") is VAE


def test_api_defaults() -> None:
    mapped = txt2img(prompt="a cat")
    spec = mapped.spec
    assert (spec.steps, spec.cfg_scale, spec.width, spec.height) == (50, 7.0, 512, 512)
    assert (spec.sampler_name, spec.scheduler) == ("Euler", "automatic")
    assert 0 <= spec.seed < 4294967294 and 0 <= spec.subseed < 4294967294
    assert spec.model is None and spec.vae is None and spec.clip_skip == 1
    assert mapped.notes == [] and mapped.task_id.startswith("task(txt2img-")
    img = map_request(
        JobKind.IMG2IMG,
        Img2ImgRequest(init_images=["x"]),
        options={},
        catalog=CATALOG,
        rng=random.Random(1),
    ).spec
    assert (img.inpainting_fill, img.inpaint_full_res, img.inpaint_full_res_padding) == (0, True, 0)
    assert (img.denoising_strength, img.mask_blur) == (0.75, 4)


def test_seeds_count_up_unless_a_variation_strength_is_set() -> None:
    assert txt2img(seed=10, subseed=20, batch_size=2, n_iter=2).all_seeds == [10, 11, 12, 13]
    varied = txt2img(seed=10, subseed=20, subseed_strength=0.5, batch_size=3)
    assert varied.all_seeds == [10, 10, 10]
    assert varied.all_subseeds == [20, 21, 22]


@pytest.mark.parametrize(
    ("body", "expected", "noted"),
    [
        ({"sampler_name": "DPM++ 2M Karras"}, ("DPM++ 2M", "automatic"), False),  # Karras is its default
        ({"sampler_name": "Euler", "scheduler": "karras"}, ("Euler", "karras"), False),
        ({"sampler_name": "Euler", "scheduler": "Karras"}, ("Euler", "karras"), False),
        ({"sampler_index": "DDIM"}, ("DDIM", "automatic"), False),
        ({"sampler_name": "k_euler_a"}, ("DPM++ 2M", "automatic"), True),  # A1111 resolves no aliases here
        ({"sampler_name": "Euler", "scheduler": "KARRAS"}, ("Euler", "automatic"), True),
    ],
)
def test_samplers_follow_a1111s_rule(body: dict[str, Any], expected: tuple[str, str], noted: bool) -> None:
    mapped = txt2img(**body)
    assert (mapped.spec.sampler_name, mapped.spec.scheduler) == expected
    assert bool(mapped.notes) == noted


def test_settings_come_from_defaults_then_tenant_then_request() -> None:
    tenant = {
        "sd_model_checkpoint": "sd15/dreamy [0123456789]",
        "CLIP_stop_at_last_layers": 2,
        "sd_vae": "vae-ft-mse",
    }
    assert (txt2img(tenant).spec.model, txt2img(tenant).spec.clip_skip) == ("sd15/dreamy", 2)
    assert txt2img(tenant).spec.vae == "vae-ft-mse"
    overridden = txt2img(tenant, override_settings={"sd_model_checkpoint": "other", "sd_vae": "None"})
    assert (overridden.spec.model, overridden.spec.vae) == ("other", None)
    unknown = txt2img(tenant, override_settings={"sd_model_checkpoint": "nope", "sd_vae": "nope.pt"})
    assert unknown.spec.model == "sd15/dreamy"  # the override is dropped, as A1111 drops it
    assert unknown.spec.vae is None
    assert len(unknown.notes) == 2
    assert (
        txt2img(override_settings={"samples_format": "webp", "jpeg_quality": 60}).spec.output_format == "webp"
    )
    assert txt2img(override_settings={"eta_ancestral": 0.5}, sampler_name="Euler a").spec.eta == 0.5
    assert txt2img(override_settings={"eta_ancestral": 0.5}, sampler_name="Euler").spec.eta is None


def test_infotext_fills_unset_fields_and_mentions_settings() -> None:
    text = (
        "castle\nNegative prompt: fog\nSteps: 30, Sampler: Euler a, CFG scale: 5, Seed: 99, Size: 640x384, "
        "Model hash: ffffffffff, Clip skip: 2, ENSD: 31337, Denoising strength: 0.4, Hires upscale: 2"
    )
    mapped = txt2img(infotext=text, steps=12)
    spec = mapped.spec
    assert (spec.prompt, spec.negative_prompt, spec.steps, spec.seed) == ("castle", "fog", 12, 99)
    assert (spec.width, spec.height, spec.cfg_scale, spec.sampler_name) == (640, 384, 5.0, "Euler a")
    assert spec.enable_hr and spec.hr_scale == 2 and spec.hr_denoising_strength == 0.4
    assert mapped.override_settings == {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
    assert spec.model is None  # "Model hash" is not followed while disable_weights_auto_swap is on (A1111)
    swapped = txt2img({"disable_weights_auto_swap": False}, infotext=text)
    assert swapped.spec.model == "other"


@pytest.mark.parametrize(
    ("kind", "body", "error", "text"),
    [
        (JobKind.IMG2IMG, {}, NotFound, "Init image not found"),
        (JobKind.IMG2IMG, {"init_images": ["a", "b", "c"], "batch_size": 2}, ValidationError, "bad number"),
        (
            JobKind.TXT2IMG,
            {"script_name": "Prompt matrix"},
            ValidationError,
            "Script 'Prompt matrix' not found",
        ),
        (JobKind.TXT2IMG, {"alwayson_scripts": {"adetailer": {}}}, ValidationError, "Script 'adetailer'"),
        (JobKind.TXT2IMG, {"prompt": ["a", "b"]}, ValidationError, "one request per prompt"),
        (JobKind.TXT2IMG, {"seed": -5}, ValidationError, "seed"),
        (
            JobKind.TXT2IMG,
            {"enable_hr": True, "hr_upscaler": "SwinIR"},
            ValidationError,
            "upscaler named SwinIR",
        ),
    ],
)
def test_refusals(kind: JobKind, body: dict[str, Any], error: type[Exception], text: str) -> None:
    model = Img2ImgRequest if kind == JobKind.IMG2IMG else Txt2ImgRequest
    with pytest.raises(error, match=text.replace("(", r"\(")):
        map_request(kind, model.model_validate(body), options={}, catalog=CATALOG, rng=random.Random(0))


def test_builtin_scripts_are_accepted_and_several_init_images_shrink_the_batch() -> None:
    assert txt2img(alwayson_scripts={"Refiner": {"args": [False, "", 0.8]}, "seed": {"args": []}}).notes == []
    mapped = map_request(
        JobKind.IMG2IMG,
        Img2ImgRequest(init_images=["a", "b"], batch_size=4, mask_blur_x=2, mask_blur_y=6),
        options={},
        catalog=CATALOG,
        rng=random.Random(0),
    )
    assert mapped.spec.batch_size == 2 and mapped.spec.mask_blur == 6
    assert mapped.parameters["init_images"] is None  # include_init_images is false


def test_option_updates_are_typed_and_resolved() -> None:
    kept, ignored = validate_option_updates(
        {"sd_model_checkpoint": "other", "CLIP_stop_at_last_layers": 3, "api_useragent": "x", "foo": 1},
        CATALOG,
    )
    assert kept == {"sd_model_checkpoint": checkpoint_title(OTHER), "CLIP_stop_at_last_layers": 3}
    assert sorted(ignored) == ["api_useragent", "foo"]
    with pytest.raises(ValidationError, match="must be a number"):
        validate_option_updates({"eta_ddim": "0.5"}, CATALOG)
    assert validate_option_updates({"sd_model_checkpoint": "nope"}, CATALOG, strict_checkpoint=False) == (
        {},
        ["sd_model_checkpoint"],
    )


def test_info_reports_what_the_worker_wrote_and_falls_back_to_the_request() -> None:
    mapped = txt2img(seed=5, batch_size=2, prompt="a <lora:x:1> cat", disable_extra_networks=True)
    assert mapped.spec.prompt == "a  cat" and mapped.prompt == "a <lora:x:1> cat"
    texts = [
        f"a cat\nSteps: 50, Sampler: Euler, CFG scale: 7, Seed: {s}, Size: 512x512, Model hash: abc, Model: m, Version: v9"
        for s in (5, 6)
    ]
    info = build_info(
        mapped,
        [OutputRecord(5, texts[0]), OutputRecord(6, texts[1])],
        job_timestamp="20240101000000",
        version="sdfleet x",
        model=None,
        vae=VAE,
        extra={"job_id": "j1"},
    )
    assert info["all_seeds"] == [5, 6] and info["infotexts"] == texts
    assert (info["sd_model_name"], info["sd_model_hash"], info["version"]) == ("m", "abc", "v9")
    assert (info["sd_vae_name"], info["sd_vae_hash"]) == ("vae-ft-mse", "eeeeeeeeee")
    assert info["all_prompts"] == ["a <lora:x:1> cat"] * 2
    assert info["sdfleet"]["job_id"] == "j1"
    empty = build_info(mapped, [], job_timestamp="0", version="sdfleet x", model=DREAMY, vae=None, extra={})
    assert empty["all_seeds"] == [5, 6] and empty["infotexts"] == []
    assert (empty["sd_model_name"], empty["sd_model_hash"]) == ("sd15/dreamy", "0123456789")


def test_hires_upscaler_names_a_registered_net_by_any_name_a1111_knows() -> None:
    net = ModelRecord(
        name="realesrgan",
        kind=ModelKind.UPSCALER,
        arch="esrgan",
        scale=4,
        source="/models/RealESRGAN_x4plus.safetensors",
        sha256="d" * 64,
        size=1,
    )
    catalog = Catalog(checkpoints=[DREAMY, OTHER], vaes=[VAE], upscalers=[net])
    for alias in ("realesrgan", "RealESRGAN_x4plus", "RealESRGAN_x4plus.safetensors", "R-ESRGAN 4x+"):
        mapped = map_request(
            JobKind.TXT2IMG,
            Txt2ImgRequest.model_validate({"enable_hr": True, "hr_upscaler": alias}),
            options={},
            catalog=catalog,
            rng=random.Random(0),
        )
        assert mapped.spec.hr_upscaler == "realesrgan", alias
    with pytest.raises(ValidationError, match="could not find upscaler named R-ESRGAN 2x\\+"):
        map_request(
            JobKind.TXT2IMG,
            Txt2ImgRequest.model_validate({"enable_hr": True, "hr_upscaler": "R-ESRGAN 2x+"}),
            options={},
            catalog=catalog,
            rng=random.Random(0),
        )


def test_restore_faces_uses_the_registered_restorer_of_the_settings_family() -> None:
    def restorer(name: str, family: str) -> ModelRecord:
        return ModelRecord(
            name=name,
            kind=ModelKind.FACE_RESTORER,
            arch=family,
            source=f"/m/{name}.safetensors",
            sha256="c" * 64,
            size=1,
        )

    catalog = Catalog(
        checkpoints=[DREAMY], face_restorers=[restorer("gfp", "gfpgan"), restorer("cf", "codeformer")]
    )

    def mapped(options: dict[str, Any], cat: Catalog = catalog) -> MappedRequest:
        return map_request(
            JobKind.TXT2IMG,
            Txt2ImgRequest.model_validate({"restore_faces": True}),
            options=options,
            catalog=cat,
            rng=random.Random(0),
        )

    default = mapped({})
    assert (default.spec.restore_faces, default.spec.face_restorer, default.spec.face_restorer_weight) == (
        True,
        "cf",
        0.5,
    )
    chosen = mapped({"face_restoration_model": "GFPGAN", "code_former_weight": 0.8})
    assert (chosen.spec.face_restorer, chosen.spec.face_restorer_weight) == ("gfp", 0.8)
    none = mapped({}, Catalog(checkpoints=[DREAMY]))
    assert not none.spec.restore_faces and any("no face restorer is registered" in n for n in none.notes)
