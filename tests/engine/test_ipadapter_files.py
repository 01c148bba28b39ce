"""IP-Adapter and image encoder files as people download them, told from their tensors alone: the SD family by
the cross-attention width, the variant (plain, Plus, Full-face) and the encoder width each reads — on the
real-size SD 1.5 and SDXL UNets and CLIP ViT-H / ViT-bigG encoders built on torch's meta device (no weights
exist) — and the tiny files loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdfleet.engine.controlnet.ipadapter import load_image_encoder, load_ip_adapter
from sdfleet.engine.controlnet.ipadapter_detect import (
    ADAPTER_METADATA_KEY,
    detect_image_encoder,
    detect_ip_adapter,
    read_image_encoder,
    read_ip_adapter,
)
from sdfleet.engine.sd.checkpoints import CONFIGS_DIR
from sdfleet.errors import ValidationError
from sdfleet.specs.ipadapter import encoder_fits
from sdfleet.testing.tiny_ipadapter import ip_adapter_state
from sdfleet.testing.tiny_models import TinyModels

diffusers: Any = pytest.importorskip("diffusers")
transformers: Any = pytest.importorskip("transformers")


def _meta_unet(family: str) -> Any:
    config = json.loads((CONFIGS_DIR / family / "unet" / "config.json").read_text())
    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})


@pytest.fixture(scope="module")
def sd15() -> Any:
    return _meta_unet("sd1")


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return _meta_unet("sdxl")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_real_size_adapters_are_told_from_their_shapes(sd15: Any, sdxl: Any) -> None:
    # ip-adapter_sd15: 4 tokens from ViT-H's 1024-wide image_embeds, 16 cross-attention layers
    plain = detect_ip_adapter(_shapes(ip_adapter_state(sd15, image_width=1024, device="meta")))
    assert (plain.arch, plain.variant, plain.cross_attention_dim, plain.tokens, plain.layers) == (
        "sd1",
        "plain",
        768,
        4,
        16,
    )
    assert plain.registry_arch == "sd1-vit-h"
    # ip-adapter_sdxl: ViT-bigG's 1280-wide embeddings, SDXL's 70 cross-attention layers
    xl = detect_ip_adapter(_shapes(ip_adapter_state(sdxl, image_width=1280, device="meta")))
    assert (xl.arch, xl.variant, xl.cross_attention_dim, xl.layers, xl.registry_arch) == (
        "sdxl",
        "plain",
        2048,
        70,
        "sdxl-vit-bigg",
    )
    # ip-adapter_sdxl_vit-h: the same UNet, ViT-H's embeddings
    assert detect_ip_adapter(_shapes(ip_adapter_state(sdxl, image_width=1024, device="meta"))).need == "vit-h"
    # ip-adapter-plus_sd15: a Resampler of 12 heads over ViT-H's 1280-wide hidden states, 16 tokens
    plus = detect_ip_adapter(
        _shapes(ip_adapter_state(sd15, variant="plus", image_width=1280, tokens=16, heads=12, device="meta"))
    )
    assert (plus.variant, plus.tokens, plus.image_width, plus.registry_arch) == (
        "plus",
        16,
        1280,
        "sd1-vit-h",
    )
    # ip-adapter-plus_sdxl_vit-h: a Resampler of width 1280 and 20 heads, SDXL's cross-attention
    plus_xl = detect_ip_adapter(
        _shapes(
            ip_adapter_state(
                sdxl, variant="plus", image_width=1280, tokens=16, dim=1280, heads=20, device="meta"
            )
        )
    )
    assert (plus_xl.arch, plus_xl.variant, plus_xl.registry_arch) == ("sdxl", "plus", "sdxl-vit-h")
    full = detect_ip_adapter(_shapes(ip_adapter_state(sd15, variant="full", image_width=1280, device="meta")))
    assert (full.variant, full.need) == ("full", "vit-h")


def test_files_that_are_no_usable_adapter_are_refused(sd15: Any) -> None:
    shapes = _shapes(ip_adapter_state(sd15, image_width=1024, device="meta"))
    faceid = {**shapes, "ip_adapter.1.to_k_lora.down.weight": (128, 320)}
    with pytest.raises(ValidationError, match="FaceID") as refused:
        detect_ip_adapter(faceid, field="controlnet.0.model")
    assert refused.value.field == "controlnet.0.model"
    with pytest.raises(ValidationError, match="a ControlNet"):
        detect_ip_adapter({"input_hint_block.0.weight": (16, 3, 3, 3)})
    odd = {k: v for k, v in shapes.items() if k.startswith("ip_adapter.")}
    odd["image_proj.proj.weight"] = (8 * 768, 1024)  # 8 tokens: no published adapter, diffusers builds 4
    with pytest.raises(ValidationError, match="tokens"):
        detect_ip_adapter(odd)


def _meta_encoder(**config: Any) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**config))
    return _shapes(dict(model.state_dict()))


def test_real_size_image_encoders_are_told_from_their_shapes() -> None:
    # h94/IP-Adapter models/image_encoder (OpenCLIP ViT-H/14) and sdxl_models/image_encoder (ViT-bigG/14)
    vit_h = dict(
        hidden_size=1280,
        intermediate_size=5120,
        projection_dim=1024,
        num_hidden_layers=32,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    vit_g = dict(
        hidden_size=1664,
        intermediate_size=8192,
        projection_dim=1280,
        num_hidden_layers=48,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    for config, family in ((vit_h, "vit-h"), (vit_g, "vit-bigg")):
        info = detect_image_encoder(_meta_encoder(**config))
        assert info.family == family
        assert {k: info.config[k] for k in config} == config
        assert info.config["hidden_act"] == "gelu"
    assert encoder_fits("vit-h", "vit-h") and not encoder_fits("vit-h", "vit-bigg")
    assert encoder_fits("p24", "clip-24-32") and encoder_fits("h32", "clip-24-32")
    assert not encoder_fits("h24", "clip-24-32")
    shapes = _meta_encoder(**vit_h)
    with pytest.raises(ValidationError, match="visual_projection"):
        detect_image_encoder({k: v for k, v in shapes.items() if not k.startswith("visual_projection")})


def test_the_tiny_files_load(tiny: TinyModels, tmp_path: Path) -> None:
    assert read_ip_adapter(tiny.ip_adapter_sd1_file).registry_arch == "sd1-p24"
    assert read_ip_adapter(tiny.ip_adapter_plus_sd1_file).registry_arch == "sd1-h32"
    assert read_ip_adapter(tiny.ip_adapter_sdxl_file).registry_arch == "sdxl-p24"
    assert read_image_encoder(tiny.image_encoder_file).family == "clip-24-32"
    adapter = load_ip_adapter(tiny.ip_adapter_sd1_file)
    assert set(adapter.state) == {"image_proj", "ip_adapter"} and adapter.info.layers == 4
    encoder = load_image_encoder(tiny.image_encoder_file)
    stored = load_file(str(tiny.image_encoder_file))
    loaded = encoder.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stored.items())
    # an encoder file missing a tensor is a 422 naming the field, not a half-loaded net
    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in stored.items() if "layers.1.mlp" not in k}, str(broken))
    with pytest.raises(ValidationError, match="has no") as refused:
        load_image_encoder(broken, field="controlnet.0.image_encoder")
    assert refused.value.field == "controlnet.0.image_encoder"
    with pytest.raises(ValidationError, match="convert it first"):
        read_ip_adapter(tmp_path / "ip-adapter_sd15.bin")


def test_an_ip_adapter_bin_converts_weights_only(tiny: TinyModels, tmp_path: Path) -> None:
    from sdfleet.engine.upscale.loader import convert_pickle

    flat = load_file(str(tiny.ip_adapter_sd1_file))
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, name = key.partition(".")
        nested[part][name] = value
    torch.save(nested, tmp_path / "ip-adapter_sd15.bin")  # as h94/IP-Adapter ships its .bin files
    convert_pickle(tmp_path / "ip-adapter_sd15.bin", tmp_path / "ip-adapter_sd15.safetensors")
    converted = load_file(str(tmp_path / "ip-adapter_sd15.safetensors"))
    assert converted.keys() == flat.keys() and all(torch.equal(converted[k], flat[k]) for k in flat)
    shapes = {k: tuple(v.shape) for k, v in converted.items()}
    # the tiny one's widths are no SD family's: its family came in the metadata the .bin does not carry
    assert detect_ip_adapter(shapes, {ADAPTER_METADATA_KEY: '{"arch": "sd1"}'}).variant == "plain"
