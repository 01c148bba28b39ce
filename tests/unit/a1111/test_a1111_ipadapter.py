"""IP-Adapter units as the A1111 ControlNet extension sends them: ``module`` one of its ``ip-adapter_clip_*``
preprocessors (or ``ip-adapter-auto``), ``model`` the adapter's ``name [hash]`` — mapped onto sdfleet's units,
and a module that does not fit the model (a ControlNet preprocessor on an IP-Adapter, an IP-Adapter
preprocessor on a ControlNet, a ViT-bigG preprocessor on a ViT-H adapter) named by its path."""

from __future__ import annotations

from typing import Any

import pytest

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.controlnet import controlnet_units
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.errors import ValidationError
from sdfleet.specs.controlnet import module_named


def _model(name: str, kind: ModelKind, arch: str) -> ModelRecord:
    return ModelRecord(
        name=name, kind=kind, arch=arch, source=f"/m/{name}.safetensors", sha256="cd" * 32, size=1
    )


CATALOG = Catalog(
    controlnets=[
        _model("control_v11p_sd15_canny", ModelKind.CONTROLNET, "sd1"),
        _model("ip-adapter_sd15", ModelKind.IP_ADAPTER, "sd1-vit-h"),
        _model("ip-adapter-plus_sdxl_vit-h", ModelKind.IP_ADAPTER, "sdxl-vit-h"),
        _model("ip-adapter_sdxl", ModelKind.IP_ADAPTER, "sdxl-vit-bigg"),
    ]
)


def _map(*units: Any) -> tuple[list[Any], list[str]]:
    notes: list[str] = []
    return controlnet_units({"controlnet": {"args": list(units)}}, CATALOG, notes), notes


def test_the_extensions_ip_adapter_units_map_onto_units() -> None:
    units, notes = _map(
        {
            "module": "ip-adapter_clip_sd15",
            "model": "ip-adapter_sd15 [cdcdcdcd]",
            "image": "AAAA",
            "weight": 0.6,
        },
        {"module": "ip-adapter_clip_sdxl_plus_vith", "model": "ip-adapter-plus_sdxl_vit-h", "image": "AAAA"},
        {"module": "ip-adapter_clip_g", "model": "ip-adapter_sdxl.safetensors", "image": "AAAA"},
        {"module": "ip-adapter-auto", "model": "ip-adapter_sd15", "image": "AAAA", "control_mode": 2},
    )
    assert [(u.module, u.model) for u in units] == [
        ("ip-adapter_clip_sd15", "ip-adapter_sd15"),
        ("ip-adapter_clip_sdxl_plus_vith", "ip-adapter-plus_sdxl_vit-h"),
        ("ip-adapter_clip_g", "ip-adapter_sdxl"),
        ("ip-adapter-auto", "ip-adapter_sd15"),
    ]
    assert units[0].weight == 0.6 and units[0].image_encoder is None  # chosen at submit
    assert notes == ["ControlNet unit 3: an IP-Adapter has no control mode (the extension hides it too)"]
    # the extension's names for its IP-Adapter preprocessors are modules this server knows
    for name in ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_h", "ip-adapter-auto"):
        assert module_named(name, "module").resolution is None


@pytest.mark.parametrize(
    ("module", "model", "says"),
    [
        ("canny", "ip-adapter_sd15", "no IP-Adapter preprocessor"),
        ("ip-adapter_clip_sd15", "control_v11p_sd15_canny", "this unit's model is a ControlNet"),
        ("ip-adapter_clip_sdxl", "ip-adapter-plus_sdxl_vit-h", "runs a vit-bigg image encoder"),
        ("ip-adapter_face_id", "ip-adapter_sd15", "not a preprocessor this server runs"),
    ],
)
def test_a_module_that_does_not_fit_the_model_is_named(module: str, model: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        _map(
            {"module": "none", "model": "control_v11p_sd15_canny", "image": "AAAA"},
            {"module": module, "model": model},
        )
    assert refused.value.field == "alwayson_scripts.controlnet.args.1.module"
