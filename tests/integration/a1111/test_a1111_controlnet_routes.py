"""The ControlNet extension's read routes: clients that probe for the extension find its version, unit
count, the registered nets titled ``name [sha8]``, the preprocessors with their sliders, and the control
types."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from tests.integration.a1111.conftest import checkpoint_body


async def test_the_extensions_routes_list_what_this_server_runs(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await api.get("/controlnet/version")).json() == {"version": 2}
    assert (await api.get("/controlnet/settings")).json() == {"control_net_unit_count": 4}
    assert (await api.get("/controlnet/model_list")).json() == {"model_list": []}
    body = checkpoint_body(tmp_path, "control_v11p_sd15_canny", kind="controlnet")
    assert (await admin.post("/v1/models", json=body)).status_code == 201
    sha8 = hashlib.sha256(b"weights of control_v11p_sd15_canny").hexdigest()[:8]
    title = f"control_v11p_sd15_canny [{sha8}]"
    assert (await api.get("/controlnet/model_list", params={"update": "true"})).json() == {
        "model_list": [title]
    }
    modules = (await api.get("/controlnet/module_list")).json()
    assert modules["module_list"][:2] == ["none", "canny"]
    canny = modules["module_detail"]["canny"]
    assert canny["model_free"] is False  # the extension: no ControlNet model needed (reference_*)
    assert canny["sliders"] == [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
    ]
    types = (await api.get("/controlnet/control_types")).json()["control_types"]
    assert types["Canny"]["default_model"] == title and "canny" in types["All"]["module_list"]
