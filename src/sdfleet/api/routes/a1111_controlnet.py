"""The A1111 ControlNet extension's read routes, so clients that look for the extension find it and list
its models and preprocessors: ``/controlnet/version``, ``/settings``, ``/model_list`` (the registered
ControlNets as the extension titles them, ``name [sha8]``), ``/module_list`` (the preprocessors this server
runs, with ``module_detail``: each one's sliders) and ``/control_types``. The units themselves arrive in
``alwayson_scripts.controlnet`` (:mod:`sdfleet.a1111.controlnet`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from sdfleet.api.deps import Ctx
from sdfleet.api.routes.a1111 import A1111Route, Caller, a1111_caller
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.specs.controlnet import MODULES, Module

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
    """The registered ControlNets and T2I-Adapters, ``name [sha8]``, by name (``update`` is accepted: the list is always
    read from the registry)."""
    nets, adapters = await ctx.queries.models_of_kind(ModelKind.CONTROLNET, ModelKind.T2I_ADAPTER)
    registered = [*nets, *adapters]  # the extension lists T2I-Adapters among its models
    return {"model_list": [controlnet_title(m) for m in sorted(registered, key=lambda m: m.name.lower())]}


@router.get("/controlnet/module_list")
async def module_list(_: Caller, alias_names: bool = False) -> dict[str, Any]:
    """The preprocessors this server runs, each with its sliders (``module_detail``)."""
    return {
        "module_list": list(MODULES),
        "module_detail": {
            name: {"model_free": True, "sliders": _sliders(module)} for name, module in MODULES.items()
        },
    }


@router.get("/controlnet/control_types")
async def control_types(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The extension's control types: ``All`` (every preprocessor and model), and ``Canny`` (its
    preprocessors and the models whose name says canny)."""
    nets, adapters = await ctx.queries.models_of_kind(ModelKind.CONTROLNET, ModelKind.T2I_ADAPTER)
    registered = [*nets, *adapters]
    titles = [controlnet_title(m) for m in sorted(registered, key=lambda m: m.name.lower())]
    canny = [t for t in titles if "canny" in t.lower()]
    return {
        "control_types": {
            "All": {
                "module_list": list(MODULES),
                "model_list": ["None", *titles],
                "default_option": "none",
                "default_model": "None",
            },
            "Canny": {
                "module_list": ["none", "canny", "invert"],
                "model_list": ["None", *canny],
                "default_option": "canny",
                "default_model": canny[0] if canny else "None",
            },
        }
    }
