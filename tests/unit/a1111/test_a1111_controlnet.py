"""The A1111 ControlNet extension's unit fields mapped onto sdfleet's units: modes by label, old label or
number, the deprecated guessmode, image shapes, the extension's model matching, skipped units reported, and
bad fields named by their path."""

from __future__ import annotations

from typing import Any

import pytest

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.controlnet import controlnet_units, request_field
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.errors import ValidationError


def _net(name: str, source: str | None = None) -> ModelRecord:
    return ModelRecord(
        name=name,
        kind=ModelKind.CONTROLNET,
        arch="sd1",
        source=source or f"/m/{name}.safetensors",
        sha256="ab" * 32,
        size=1,
    )


CATALOG = Catalog(
    controlnets=[_net("control_v11p_sd15_canny"), _net("depth-xl", "/m/diffusers_xl_depth.safetensors")]
)


def _map(*units: Any, key: str = "controlnet") -> tuple[list[Any], list[str]]:
    notes: list[str] = []
    return [u for u, _ in controlnet_units({key: {"args": list(units)}}, CATALOG, notes)], notes


def test_modes_and_resize_modes_by_label_old_label_and_number() -> None:
    units, _ = _map(
        {"model": "control_v11p_sd15_canny", "image": "AAAA", "control_mode": 2, "resize_mode": 0},
        {
            "model": "control_v11p_sd15_canny",
            "image": "AAAA",
            "control_mode": "My prompt is more important",
            "resize_mode": "Envelope (Outer Fit)",
        },
        {
            "model": "control_v11p_sd15_canny",
            "image": {"image": "AAAA"},
            "guessmode": True,
            "resize_mode": "Scale to Fit (Inner Fit)",
            "hr_option": "low res only",
        },
        key="ControlNet",
    )
    assert [u.control_mode for u in units] == [
        "ControlNet is more important",
        "My prompt is more important",
        "ControlNet is more important",
    ]
    assert [u.resize_mode for u in units] == ["Just Resize", "Resize and Fill", "Crop and Resize"]
    assert units[2].hr_option == "Low res only" and units[2].image == "AAAA"


def test_models_match_as_the_extension_matches() -> None:
    for alias in ("control_v11p_sd15_canny [d14c016b]", "CONTROL_V11P_SD15_CANNY", "v11p_sd15_can"):
        [unit], _ = _map({"model": alias, "image": "AAAA"})
        assert unit.model == "control_v11p_sd15_canny", alias
    [unit], _ = _map({"model": "diffusers_xl_depth", "image": "AAAA"})  # the file's stem
    assert unit.model == "depth-xl"


def test_skipped_units_are_reported_not_dropped_silently() -> None:
    units, notes = _map(
        {"model": "None", "image": "AAAA"},
        {"enabled": False, "model": "control_v11p_sd15_canny"},
        {"model": "control_v11p_sd15_canny", "image": {"image": "AAAA", "mask": "BBBB"}},
        {"model": "control_v11p_sd15_canny", "module": "tile_colorfix", "image": "AAAA"},
    )
    assert len(units) == 2
    assert "unit 0: no model" in notes[0] and "unit 1: disabled" in notes[1]
    assert "unit 3: tile_colorfix's control map is applied; the latent colour fix" in notes[2]
    # the masks are read as the extension reads them: image.mask, or the unit's own mask / mask_image
    assert units[0].image == "AAAA" and units[0].mask == "BBBB"


def test_unit_masks_and_the_effective_region_are_kept() -> None:
    units, _ = _map(
        {"model": "control_v11p_sd15_canny", "image": "AAAA", "mask_image": "CCCC"},
        {"model": "control_v11p_sd15_canny", "image": "AAAA", "effective_region_mask": "DDDD"},
    )
    assert units[0].mask == "CCCC" and units[1].effective_region_mask == "DDDD"


@pytest.mark.parametrize(
    ("unit", "field", "words"),
    [
        (
            {"model": "openpose", "image": "AAAA"},
            "alwayson_scripts.controlnet.args.0.model",
            "no ControlNet model",
        ),
        (
            {"model": "control_v11p_sd15_canny", "module": "depth_leres"},
            "alwayson_scripts.controlnet.args.0.module",
            "no annotator for yet",
        ),
        (
            {"model": "control_v11p_sd15_canny", "control_mode": 7},
            "alwayson_scripts.controlnet.args.0.control_mode",
            "Balanced",
        ),
        (
            {"model": "control_v11p_sd15_canny", "guidance_start": 0.8, "guidance_end": 0.2},
            "alwayson_scripts.controlnet.args.0",
            "guidance_start",
        ),
        (
            {"model": "control_v11p_sd15_canny", "weight": 9},
            "alwayson_scripts.controlnet.args.0.weight",
            "less than or equal",
        ),
        (
            {"model": "depth-xl", "union_control_type": "Sparkles"},
            "alwayson_scripts.controlnet.args.0.union_control_type",
            "not a ControlNet Union control type",
        ),
    ],
)
def test_bad_fields_are_named_by_their_path(unit: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _map(unit)
    assert refused.value.field == field and words in refused.value.message


def test_a_units_field_is_named_as_the_request_has_it() -> None:
    """Skipped units keep their places: the job's unit 0 is argument 1 here."""
    notes: list[str] = []
    pairs = controlnet_units(
        {"ControlNet": {"args": [{"enabled": False}, {"model": "control_v11p_sd15_canny", "image": "AAAA"}]}},
        CATALOG,
        notes,
    )
    fields = [path for _, path in pairs]
    assert fields == ["alwayson_scripts.ControlNet.args.1"]
    assert request_field("controlnet.0.model", fields) == "alwayson_scripts.ControlNet.args.1.model"
    assert request_field("controlnet.0", fields) == "alwayson_scripts.ControlNet.args.1"
    assert request_field("controlnet.3.model", fields) == "controlnet.3.model"  # not a unit of the request
    assert request_field("steps", fields) == "steps" and request_field(None, fields) is None


def test_union_control_types_as_webuiapi_and_the_extension_send_them() -> None:
    units, _ = _map(
        {"model": "depth-xl", "union_control_type": "Hard Edge"},  # webuiapi: the enum's value
        {"model": "depth-xl", "union_control_type": "openpose"},  # a tag
        {"model": "depth-xl", "union_control_type": "Unknown"},  # the extension's "none"
        {"model": "depth-xl"},
    )
    assert [u.union_control_type for u in units] == ["Hard Edge", "OpenPose", None, None]
