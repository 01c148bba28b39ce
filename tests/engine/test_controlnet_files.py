"""ControlNet files as people download them: the family, variant and layout told from the tensors alone,
the config rebuilt from shapes (real-size SD 1.5, SD 2.1, SDXL full/small and Union nets, built on torch's
meta device so no weights exist), and the tiny test nets loaded in both key layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdfleet.engine.controlnet.detect import CONFIG_METADATA_KEY, detect_controlnet, fits_checkpoint
from sdfleet.engine.controlnet.loader import load_controlnet, read_controlnet
from sdfleet.engine.sd.checkpoints import CONFIGS_DIR
from sdfleet.engine.sd.convert import controlnet_ldm_state
from sdfleet.errors import ValidationError

diffusers: Any = pytest.importorskip("diffusers")

_UNET_ONLY = {"out_channels", "up_block_types", "sample_size", "center_input_sample", "_class_name"}


def _sdxl(**changes: Any) -> dict[str, Any]:
    unet = json.loads((CONFIGS_DIR / "sdxl" / "unet" / "config.json").read_text())
    config = {k: v for k, v in unet.items() if k not in _UNET_ONLY and not k.startswith("_")}
    return {**config, **changes}


REAL: dict[str, tuple[str, dict[str, Any]]] = {
    "sd15": ("sd1", {}),  # ControlNetModel's defaults are SD 1.5's (control_v11p_sd15_*)
    "sd21": (
        "sd2",
        {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True},
    ),
    "sdxl": ("sdxl", _sdxl()),  # controlnet-canny-sdxl-1.0
    "sdxl-small": ("sdxl", _sdxl(transformer_layers_per_block=[0, 0, 0])),
}


def _meta_state(cls: Any, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(cls(**config).state_dict())


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
@pytest.mark.parametrize("name", list(REAL))
def test_a_real_size_net_is_rebuilt_from_its_shapes(name: str, layout: str) -> None:
    arch, config = REAL[name]
    state = _meta_state(diffusers.ControlNetModel, config)
    if layout == "ldm":
        layers = config.get("layers_per_block", 2)
        file = {"control_model." + k: v for k, v in controlnet_ldm_state(state, layers).items()}
    else:
        file = state
    info = detect_controlnet(_shapes(file))  # no metadata: shapes and the family's defaults only
    assert (info.arch, info.layout, info.variant) == (arch, layout, "full")
    assert info.prefix == ("control_model." if layout == "ldm" else "")
    rebuilt = _meta_state(diffusers.ControlNetModel, info.config)
    assert _shapes(rebuilt) == _shapes(state)  # every tensor, by name and shape
    if arch == "sdxl":
        assert info.size == ("small" if name == "sdxl-small" else "full")
        assert info.config["projection_class_embeddings_input_dim"] == 2816


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_controlnet_union_is_told_apart_and_rebuilt(layout: str) -> None:
    state = _meta_state(diffusers.ControlNetUnionModel, _sdxl())
    file = controlnet_ldm_state(state, 2) if layout == "ldm" else state
    info = detect_controlnet(_shapes(file))
    assert (info.arch, info.variant, info.layout) == ("sdxl", "union", layout)
    assert info.config["num_control_type"] == 6
    config = {k: v for k, v in info.config.items() if k != "mid_block_type"}
    assert _shapes(_meta_state(diffusers.ControlNetUnionModel, config)) == _shapes(state)


def test_the_tiny_nets_load_in_both_layouts_and_steer(tiny_models: Any, tmp_path: Path) -> None:
    sd1 = load_controlnet(tiny_models.controlnet_sd1_file)
    assert (sd1.arch, sd1.info.layout) == ("sd1", "ldm")
    sdxl = load_controlnet(tiny_models.controlnet_sdxl_file)
    assert (sdxl.arch, sdxl.info.layout) == ("sdxl", "diffusers")
    # the same net in the other layout loads the same weights
    state = {k: v.clone() for k, v in sd1.module.state_dict().items()}
    other = tmp_path / "diffusers.safetensors"
    meta = {CONFIG_METADATA_KEY: json.dumps(sd1.info.config)}
    save_file(state, str(other), metadata=meta)
    again = load_controlnet(other)
    assert again.info.layout == "diffusers"
    assert all(torch.equal(v, again.module.state_dict()[k]) for k, v in state.items())
    # its residuals are not zero: the zero convolutions were perturbed
    config = sd1.module.config
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
    hint = torch.rand(1, 3, 16, 16, generator=generator)  # the picture's size: the tiny VAE halves it
    with torch.no_grad():
        down, mid = sd1.module(sample, 10, text, controlnet_cond=hint, return_dict=False)
    assert len(down) == 1 + 2 * config.layers_per_block + 1 and mid.abs().sum() > 0
    assert all(d.abs().sum() > 0 for d in down)


def test_files_that_are_not_controlnets_are_refused_by_name(tiny_models: Any, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="an SD checkpoint"):
        read_controlnet(tiny_models.sd1_file)
    with pytest.raises(ValidationError, match="sdfleet models convert"):
        read_controlnet(tmp_path / "control_v11p_sd15_canny.pth", field="controlnet.0.model")
    state = load_file(str(tiny_models.controlnet_sdxl_file))
    state.pop("controlnet_mid_block.weight")
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(ValidationError, match=r"broken\.safetensors: the file has no controlnet_mid_block"):
        load_controlnet(broken)


def test_a_net_fits_only_its_own_family() -> None:
    assert fits_checkpoint("sd1", "sd1") and not fits_checkpoint("sd1", "sdxl")
    assert fits_checkpoint(None, "sdxl") and fits_checkpoint("sd2", None)


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_the_tiny_union_net_loads_in_both_layouts(tiny_models: Any, tmp_path: Path, layout: str) -> None:
    from sdfleet.testing.tiny_models import build_tiny_sdxl, write_tiny_controlnet

    path = tiny_models.controlnet_union_file
    if layout == "ldm":
        path = write_tiny_controlnet(
            tmp_path / "union-ldm.safetensors", build_tiny_sdxl(tmp_path / "w").unet, layout="ldm", union=True
        )
    net = load_controlnet(path)
    assert type(net.module).__name__ == "ControlNetUnionModel" and net.union and net.arch == "sdxl"
    assert net.info.layout == layout and net.info.config["num_control_type"] == 6
