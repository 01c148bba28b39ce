"""A1111's settings (``/sdapi/v1/options``): the defaults A1111 1.10 reports, a tenant's settings
overlaid on them, and the checks a stored or overriding value must pass."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sdfleet.a1111.catalog import Catalog, checkpoint_title
from sdfleet.a1111.settings_table import SETTINGS_TABLE, setting_kind
from sdfleet.errors import ValidationError
from sdfleet.validation import text_problem

OPTION_DEFAULTS: Mapping[str, Any] = SETTINGS_TABLE
"""The A1111 1.10 settings ``GET /sdapi/v1/options`` reports, with A1111's defaults (the whole table:
:mod:`sdfleet.a1111.settings_table`)."""

EFFECTIVE_SETTINGS = frozenset(
    {
        "sd_model_checkpoint",
        "sd_vae",
        "CLIP_stop_at_last_layers",
        "samples_format",
        "jpeg_quality",
        "eta_ddim",
        "eta_ancestral",
        "disable_weights_auto_swap",
        "return_grid",
        "img_max_size_mp",
        "grid_background_color",
        "grid_text_active_color",
        "grid_text_inactive_color",
    }
)
"""The settings that change what this server does (docs/a1111.md lists them); every other key of the table
is stored per tenant and read back, and changes nothing here."""

RESTRICTED_OPTIONS = frozenset({"api_enable_requests", "api_forbid_local_requests", "api_useragent"})
"""Settings A1111 flags ``restrict_api``: silently ignored when set through the API."""


def effective_options(tenant_options: Mapping[str, Any]) -> dict[str, Any]:
    """A1111's defaults overlaid with a tenant's settings (``GET /sdapi/v1/options``). A stored value that
    is not a valid setting (a NaN, text that cannot be encoded, the wrong type — stored before these were
    refused) falls back to the default, so one bad value never breaks the settings for good."""
    merged = dict(OPTION_DEFAULTS)
    for key, value in tenant_options.items():
        if key not in OPTION_DEFAULTS:
            continue
        try:
            _check_option_type(key, value)
        except ValidationError:
            continue
        merged[key] = value
    return merged


MAX_OPTION_BYTES = 64 * 1024
"""The largest value ``POST /sdapi/v1/options`` stores for one setting (JSON-encoded)."""


def validate_option_updates(
    updates: Mapping[str, Any], catalog: Catalog, *, strict_checkpoint: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """The settings of a ``POST /sdapi/v1/options`` body (or of ``override_settings`` kept afterwards) that
    are stored, and the keys that are ignored.

    Settings A1111 does not have, and the ``restrict_api`` ones, are ignored (A1111 fails on the former and
    skips the latter). A value must have the type of the setting's default. ``sd_model_checkpoint`` must name
    a registered checkpoint (A1111: "model '…' not found") and is stored as its title; without
    ``strict_checkpoint`` an unknown one is ignored instead, as A1111 drops an unknown checkpoint override.
    """
    accepted: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in updates.items():
        if key not in OPTION_DEFAULTS or key in RESTRICTED_OPTIONS or key == "sd_checkpoint_hash":
            ignored.append(key)
            continue
        if key == "sd_model_checkpoint" and value is not None:
            found = catalog.checkpoint(str(value))
            if found is None:
                if strict_checkpoint:
                    raise ValidationError(f"model {value!r} not found", field=key)
                ignored.append(key)
                continue
            value = checkpoint_title(found)
        _check_option_type(key, value)
        accepted[key] = value
    return accepted, ignored


def _check_option_type(key: str, value: Any) -> None:
    kind = setting_kind(key)
    if kind == "nullable_str":
        ok, wanted = value is None or isinstance(value, str), "a string or null"
    elif kind == "bool":
        ok, wanted = isinstance(value, bool), "true or false"
    elif kind == "int":
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind == "number":
        ok, wanted = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif kind == "list":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        wanted = "a list of strings"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise ValidationError(f"setting {key} must be {wanted}", field=key)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ValidationError(f"setting {key} must be a finite number", field=key) from exc
    if len(encoded) > MAX_OPTION_BYTES:
        raise ValidationError(f"setting {key} is larger than {MAX_OPTION_BYTES} bytes", field=key)
    for text in _strings(value):
        problem = text_problem(text)
        if problem is not None:
            raise ValidationError(f"setting {key} {problem}", field=key)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    return []
