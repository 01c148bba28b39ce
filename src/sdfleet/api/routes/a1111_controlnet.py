"""The A1111 ControlNet extension's read routes, so clients that look for the extension find it and list
its models and preprocessors: ``/controlnet/version``, ``/settings``, ``/model_list`` (the registered
ControlNets as the extension titles them, ``name [sha8]``), ``/module_list`` (the preprocessors this server
runs, with ``module_detail``: each one's sliders), ``/control_types`` and ``POST /controlnet/detect``
(a module's control maps of some pictures, :mod:`sdfleet.jobs.detect`). The units themselves arrive in
``alwayson_scripts.controlnet`` (:mod:`sdfleet.a1111.controlnet`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from sdfleet.a1111.controlnet import DetectBody
from sdfleet.api.deps import Ctx
from sdfleet.api.routes.a1111 import A1111Route, Caller, a1111_caller
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.jobs.detect import Detector, DetectRequest
from sdfleet.specs.controlnet import LABELS, MODULES, Module

router = APIRouter(tags=["a1111"], route_class=A1111Route, dependencies=[Depends(a1111_caller)])

API_VERSION = 2
"""The extension's API version that clients check (its ``get_api_version``)."""


def controlnet_title(model: ModelRecord) -> str:
    """The extension's model title: ``name [first 8 hex digits of the sha256]``."""
    return f"{model.name} [{model.sha256[:8]}]" if model.sha256 else model.name


def _sliders(module: Module) -> list[dict[str, Any]]:
    sliders: list[dict[str, Any]] = []
    if module.resolution is not None:
        res, res_min, res_max, res_step = module.resolution
        sliders.append(
            {
                "name": "Preprocessor Resolution",
                "value": res,
                "min": res_min,
                "max": res_max,
                "step": res_step,
            }
        )
    for threshold in (module.threshold_a, module.threshold_b):
        if threshold is not None:
            name, value, low, high, step = threshold
            sliders.append({"name": name, "value": value, "min": low, "max": high, "step": step})
    return sliders


@router.get("/controlnet/version")
async def version(_: Caller) -> dict[str, int]:
    """The extension's API version."""
    return {"version": API_VERSION}


@router.get("/controlnet/settings")
async def settings(ctx: Ctx, _: Caller) -> dict[str, int]:
    """How many units one request may carry."""
    return {"control_net_unit_count": ctx.settings.limits.max_controlnet_units}


@router.get("/controlnet/model_list")
async def model_list(ctx: Ctx, _: Caller, update: bool = True) -> dict[str, list[str]]:
    """The registered ControlNets and IP-Adapters, ``name [sha8]``, by name (``update`` is accepted: the
    list is always read from the registry)."""
    nets, adapters = await ctx.queries.models_of_kind(ModelKind.CONTROLNET, ModelKind.IP_ADAPTER)
    registered = [*nets, *adapters]
    return {"model_list": [controlnet_title(m) for m in sorted(registered, key=lambda m: m.name.lower())]}


@router.get("/controlnet/module_list")
async def module_list(_: Caller, alias_names: bool = False) -> dict[str, Any]:
    """The preprocessors this server runs, each with its sliders (``module_detail``); ``alias_names``: by
    the extension's display labels (``invert (from white bg & black line)``…)."""
    named = {(LABELS.get(name, name) if alias_names else name): module for name, module in MODULES.items()}
    return {
        "module_list": list(named),
        "module_detail": {
            name: {"model_free": False, "sliders": _sliders(module)} for name, module in named.items()
        },
    }


@router.get("/controlnet/control_types")
async def control_types(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The extension's control types: ``All`` (every preprocessor and model), and one per tag of the
    preprocessors (``Canny``, ``Tile``, ``Scribble``, ``IP-Adapter``…: its preprocessors and the models —
    ControlNets and IP-Adapters — whose name says the tag)."""
    nets, adapters = await ctx.queries.models_of_kind(ModelKind.CONTROLNET, ModelKind.IP_ADAPTER)
    titles = [controlnet_title(m) for m in sorted([*nets, *adapters], key=lambda m: m.name.lower())]
    types: dict[str, Any] = {
        "All": {
            "module_list": list(MODULES),
            "model_list": ["None", *titles],
            "default_option": "none",
            "default_model": "None",
        }
    }
    tags = sorted({tag for module in MODULES.values() for tag in module.tags})
    for tag in tags:
        modules = [name for name, module in MODULES.items() if tag in module.tags]
        models = [t for t in titles if tag.lower() in t.lower()]
        types[tag] = {
            "module_list": ["none", *modules],
            "model_list": ["None", *models],
            "default_option": modules[0],
            "default_model": models[0] if models else "None",
        }
    return {"control_types": types}


@router.post("/controlnet/detect")
async def detect(body: DetectBody, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The module's control maps of the pictures (``controlnet_input_images``, or ``controlnet_images`` as
    webuiapi sends them), as the extension answers: ``{"images": [base64 PNG…], "info": "Success"}``."""
    images, field = body.pictures()
    res = body.controlnet_processor_res
    maps = await Detector(ctx.settings.limits).detect(
        DetectRequest(
            module=body.controlnet_module,
            images=images,
            images_field=field,
            masks=body.controlnet_masks,
            processor_res=int(res) if res > 0 else None,
            threshold_a=body.controlnet_threshold_a,
            threshold_b=body.controlnet_threshold_b,
        )
    )
    return {"images": maps, "info": "Success"}
