"""Registry sources → downloads (no network): hf:// and civitai:// URL mapping with tokens, s3:// needing
the orchestrator's URL, format rules, model names, and the names a stored job makes a worker fetch."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdfleet.errors import ModelUnavailable, ValidationError
from sdfleet.jobs.registry import named_models
from sdfleet.models.sources import check_name, civitai_url, hf_url, plan_fetch


@pytest.mark.parametrize(
    ("source", "url"),
    [
        (
            "hf://stabilityai/stable-diffusion-xl-base-1.0/sd_xl_base_1.0.safetensors",
            "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        ),
        (
            "hf://org/repo@v1.2/sub/dir/file.safetensors",
            "https://huggingface.co/org/repo/resolve/v1.2/sub/dir/file.safetensors",
        ),
        (
            "hf://org/repo@refs/pr/3/file.safetensors".replace("refs/pr/3", "refs%2Fpr%2F3"),
            "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F3/file.safetensors",
        ),
        (
            "hf://datasets/org/data/lora one.safetensors",
            "https://huggingface.co/datasets/org/data/resolve/main/lora%20one.safetensors",
        ),
    ],
)
def test_hf_sources_map_to_resolve_urls(source: str, url: str) -> None:
    assert hf_url(source) == url


def test_hf_tokens_go_in_the_authorization_header() -> None:
    plan = plan_fetch("hf://org/repo/x.safetensors", hf_token="hf_abc")
    assert plan.headers == {"authorization": "Bearer hf_abc"} and plan.guarded
    assert plan_fetch("hf://org/repo/x.safetensors").headers == {}


@pytest.mark.parametrize("source", ["hf://org/repo", "hf://org/repo/../x.safetensors", "hf://org/@/x"])
def test_bad_hf_sources_are_refused(source: str) -> None:
    with pytest.raises(ValidationError):
        hf_url(source)


def test_civitai_sources_map_to_the_download_api_with_the_token() -> None:
    assert civitai_url("civitai://version/128713") == "https://civitai.com/api/download/models/128713"
    assert (
        civitai_url("civitai://version/5?type=Model&format=SafeTensor")
        == "https://civitai.com/api/download/models/5?type=Model&format=SafeTensor"
    )
    plan = plan_fetch("civitai://version/5", civitai_token="tok")
    assert plan.url == "https://civitai.com/api/download/models/5"
    assert plan.headers == {"authorization": "Bearer tok"} and plan.suffix == ".safetensors"
    with pytest.raises(ValidationError):
        civitai_url("civitai://model/5")


def test_s3_sources_use_the_url_the_orchestrator_gave() -> None:
    with pytest.raises(ModelUnavailable) as err:
        plan_fetch("s3://bucket/models/x.safetensors")
    assert err.value.retryable
    plan = plan_fetch("s3://bucket/models/x.safetensors", url="https://s3.example/presigned?sig=1")
    assert plan.url == "https://s3.example/presigned?sig=1" and not plan.guarded
    assert plan.host == "s3.example"


def test_formats() -> None:
    assert plan_fetch("https://example.com/a/b.safetensors").suffix == ".safetensors"
    assert plan_fetch("https://example.com/download?id=3").suffix == ".safetensors"  # checked after download
    for source in ("https://example.com/m.ckpt", "hf://o/r/m.pt", "s3://b/m.bin"):
        with pytest.raises(ModelUnavailable, match="pickle") as err:
            plan_fetch(source, url="https://s3.example/x")
        assert not err.value.retryable
    assert plan_fetch("https://example.com/m.ckpt", allow_pickle=True).suffix == ".ckpt"
    local = plan_fetch("/models/x.safetensors")
    assert local.path == Path("/models/x.safetensors") and local.url is None
    assert plan_fetch("file:///models/a%20b.safetensors").path == Path("/models/a b.safetensors")
    with pytest.raises(ModelUnavailable):
        plan_fetch("relative/x.safetensors")
    with pytest.raises(ModelUnavailable):
        plan_fetch("ftp://example.com/x.safetensors")


@pytest.mark.parametrize("name", ["style", "styles/anime v2", "a-b_c.d (1) [x]+y"])
def test_names_that_are_labels_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "x/..", "/abs", "~/x", "a//b", "a\\b", "C:x", "a\nb"])
def test_names_that_look_like_paths_fail(name: str) -> None:
    with pytest.raises(ValidationError):
        check_name(name)


def test_named_models_finds_every_model_a_stored_job_names() -> None:
    params = {
        "prompt": "a cat <lora:style:0.8> and <lyco:fur:1> <hypernet:nope:1>",
        "negative_prompt": "blurry <lora:neg:1>",
        "model": "dreamshaper",
        "refiner_checkpoint": None,
        "vae": "vae-ft-mse",
        "loras": [{"name": "style", "weight": 1.0}, {"name": "detail", "weight": 0.5}],
    }
    assert named_models(params) == ["dreamshaper", "vae-ft-mse", "style", "detail", "fur", "neg"]
    assert named_models({"prompt": "plain", "loras": []}) == []
