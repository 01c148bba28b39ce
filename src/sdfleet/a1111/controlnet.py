"""The A1111 ControlNet extension's request shape, mapped onto :class:`~sdfleet.domain.ControlNetUnit`:
``alwayson_scripts: {"controlnet": {"args": [unit, …]}}`` as the extension's API and ``webuiapi``'s
``ControlNetUnit`` send it. Each unit's fields are read as the extension reads them — control and resize
modes by label, old label or number (and the deprecated ``guessmode``), the image as a base64 string or
``{"image", "mask"}``, the model as ``name [hash]``, name, file stem or the closest name — and a unit the
extension would skip (disabled, no model) is reported in ``info`` instead of vanishing. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from sdfleet.a1111.catalog import Catalog
from sdfleet.domain import CONTROL_HR_OPTIONS, CONTROL_MODES, CONTROL_RESIZE_MODES, ControlNetUnit, ModelKind
from sdfleet.errors import ValidationError
from sdfleet.specs.annotate import find_module
from sdfleet.specs.controlnet import Module
from sdfleet.specs.ipadapter import adapter_family, check_unit_module

__all__ = ["SCRIPT_NAMES", "DetectBody", "controlnet_units"]

SCRIPT_NAMES = ("controlnet",)
"""``alwayson_scripts`` keys (any case) that carry ControlNet units."""

_RESIZE_ALIASES = {
    "just resize": "Just Resize",
    "crop and resize": "Crop and Resize",
    "scale to fit (inner fit)": "Crop and Resize",
    "inner fit": "Crop and Resize",
    "resize and fill": "Resize and Fill",
    "envelope (outer fit)": "Resize and Fill",
    "outer fit": "Resize and Fill",
}
_MODE_ALIASES = {mode.lower(): mode for mode in CONTROL_MODES}
_HR_ALIASES = {option.lower(): option for option in CONTROL_HR_OPTIONS}


def _choice(value: Any, labels: Sequence[str], aliases: Mapping[str, str], field: str) -> str:
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be one of {', '.join(labels)}", field=field)
    if isinstance(value, int | float) and float(value).is_integer() and 0 <= int(value) < len(labels):
        return labels[int(value)]
    if isinstance(value, str) and value.strip().lower() in aliases:
        return aliases[value.strip().lower()]
    raise ValidationError(
        f"{field}: {value!r} is not one of {', '.join(labels)} (or 0–{len(labels) - 1})", field=field
    )


def _image(value: Any, field: str) -> tuple[str | None, str | None]:
    """(image, mask) from the shapes the extension accepts."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping):
        image, mask = value.get("image"), value.get("mask")
        if image is not None and not isinstance(image, str):
            raise ValidationError(f"{field}.image must be a base64 image", field=f"{field}.image")
        return image or None, mask if isinstance(mask, str) and mask else None
    raise ValidationError(f"{field} must be a base64 image or {{image, mask}}", field=field)


def _unit(raw: Any, index: int, field: str, catalog: Catalog, notes: list[str]) -> ControlNetUnit | None:
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{field} must be an object of unit fields", field=field)
    enabled = raw.get("enabled", True)
    model_name = str(raw.get("model") or "None")
    if not enabled:
        notes.append(f"ControlNet unit {index}: disabled, not applied")
        return None
    if model_name.strip().lower() in ("none", ""):
        notes.append(f"ControlNet unit {index}: no model, not applied (the extension skips it too)")
        return None
    model = catalog.controlnet(model_name)
    if model is None:
        known = ", ".join(m.name for m in catalog.controlnets) or "none registered"
        raise ValidationError(
            f"no ControlNet model {model_name!r} (registered: {known})", field=f"{field}.model"
        )
    module = str(raw.get("module") or "none")
    found = find_module(module, f"{field}.module")  # model-free, or one with weights (an annotate job)
    ip_adapter = model.kind == ModelKind.IP_ADAPTER  # an image prompt: module ip-adapter_clip_*
    check_unit_module(
        module, ip_adapter, adapter_family(model.arch)[1] if ip_adapter else None, f"{field}.module"
    )
    image, mask = _image(raw.get("image", raw.get("input_image")), f"{field}.image")
    for key in ("mask", "mask_image"):  # the unit's own mask field (and its alias) wins over image.mask
        if isinstance(raw.get(key), str) and raw[key]:
            mask = raw[key]
    region = raw.get("effective_region_mask")
    if region is not None and not isinstance(region, str):
        raise ValidationError(
            f"{field}.effective_region_mask must be a base64 image", field=f"{field}.effective_region_mask"
        )
    mode = raw.get("control_mode", 0)
    if raw.get("guessmode") and "control_mode" not in raw:
        mode = "ControlNet is more important"
    values: dict[str, Any] = {
        "enabled": True,
        "module": module,
        "model": model.name,
        "image": image,
        "mask": mask,
        "effective_region_mask": region or None,
        "resize_mode": _choice(
            raw.get("resize_mode", 1), CONTROL_RESIZE_MODES, _RESIZE_ALIASES, f"{field}.resize_mode"
        ),
        "control_mode": _choice(mode, CONTROL_MODES, _MODE_ALIASES, f"{field}.control_mode"),
        "hr_option": _choice(
            raw.get("hr_option", "Both"), CONTROL_HR_OPTIONS, _HR_ALIASES, f"{field}.hr_option"
        ),
    }
    for key in ("weight", "processor_res", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
        if raw.get(key) is not None:
            values[key] = raw[key]
    union_type = raw.get("union_control_type")  # ControlNet Union (the extension's values, "Unknown": none)
    if union_type is not None and union_type != "":
        values["union_control_type"] = union_type if isinstance(union_type, str) else repr(union_type)
    for key in ("pixel_perfect", "save_detected_map"):
        if key in raw:
            values[key] = bool(raw[key])
    step = found.sampling_step if isinstance(found, Module) else None
    if step:
        notes.append(f"ControlNet unit {index}: {module}'s control map is applied; {step} is not done here")
    if ip_adapter and values["control_mode"] != "Balanced":
        notes.append(
            f"ControlNet unit {index}: an IP-Adapter has no control mode (the extension hides it too)"
        )
    try:
        return ControlNetUnit.model_validate(values)
    except PydanticError as exc:  # name the unit's field
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        target = f"{field}.{where}" if where else field
        raise ValidationError(f"{target}: {first['msg']}", field=target) from exc


def controlnet_units(
    scripts: Mapping[str, Any] | None, catalog: Catalog, notes: list[str]
) -> list[tuple[ControlNetUnit, str]]:
    """The enabled units of a request's ``alwayson_scripts.controlnet`` (none: empty), each checked, with
    the path of the unit in the request (``alwayson_scripts.controlnet.args.N``: skipped units keep
    their places, so the job's unit ``k`` need not be argument ``k``)."""
    for name, value in (scripts or {}).items():
        if name.lower() not in SCRIPT_NAMES:
            continue
        field = f"alwayson_scripts.{name}.args"
        args = value.get("args") if isinstance(value, Mapping) else value
        if args is None:
            return []
        if not isinstance(args, list):
            raise ValidationError(f"{field} must be a list of units", field=field)
        units = [
            (_unit(raw, i, f"{field}.{i}", catalog, notes), f"{field}.{i}") for i, raw in enumerate(args)
        ]
        return [(u, path) for u, path in units if u is not None]
    return []


def request_field(field: str | None, unit_fields: Sequence[str]) -> str | None:
    """A job spec's field as the A1111 request spelled it: ``controlnet.K.…`` of the job is the unit
    at ``unit_fields[K]`` of the request; any other field is the same in both."""
    if field is None:
        return None
    head, _, rest = field.partition(".")
    if head != "controlnet":
        return field
    index, _, tail = rest.partition(".")
    if not index.isdigit() or int(index) >= len(unit_fields):
        return field
    return f"{unit_fields[int(index)]}.{tail}" if tail else unit_fields[int(index)]


class DetectBody(BaseModel):
    """``POST /controlnet/detect``'s body as the extension reads it (unknown fields ignored), plus
    ``controlnet_images``, the name ``webuiapi``'s ``controlnet_detect`` sends the pictures under."""

    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] = Field(default_factory=list)
    controlnet_processor_res: float = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list)
    low_vram: bool = False

    def pictures(self) -> tuple[list[str], str]:
        """The pictures and the field they came in (``controlnet_input_images`` wins when both are sent)."""
        if self.controlnet_input_images:
            return self.controlnet_input_images, "controlnet_input_images"
        if self.controlnet_images:
            return self.controlnet_images, "controlnet_images"
        return [], "controlnet_input_images"
