"""Hostile input at the A1111 edge: NaN and Infinity, lone surrogates and NULs, oversized numbers, text and
images. Each is refused with a 4xx in A1111's shape (JSON a strict parser reads) naming the field, stores no
job, and leaves the routes working for the next caller."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdfleet.api.app import create_app
from sdfleet.config import Settings
from tests.integration.a1111.conftest import NO_WORKER_TIMEOUT, png_b64
from tests.integration.api.conftest import store_of
from tests.integration.api.test_edge_validation import bomb_png


@pytest.fixture(scope="module")
def edge_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for every refusal (none of them changes anything)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("a1111-edge"),
        a1111_request_timeout=NO_WORKER_TIMEOUT,
        allowed_hosts=["testserver"],  # FastAPI's TestClient sends Host: testserver
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"the answer holds {name}, which is not JSON")


def strict_json(text: str) -> Any:
    """Parse as a strict JSON reader does: ``NaN`` and ``Infinity`` are not JSON."""
    return json.loads(text, parse_constant=_refuse_constant)


def raw_post(client: TestClient, path: str, text: str) -> Any:
    """POST JSON text exactly as written (``NaN``, ``\\ud800`` escapes and all)."""
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def no_jobs(client: TestClient) -> bool:
    jobs = client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant=None))  # type: ignore[union-attr]
    return jobs == []


def detail_text(response: Any) -> str:
    """The A1111 answer's detail as text (FastAPI's list of problems or A1111's message)."""
    body = strict_json(response.text)
    return json.dumps(body["detail"]) if isinstance(body["detail"], list) else str(body["detail"])


# ===================================================================== NaN and Infinity


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"prompt": "x", "steps": NaN}', "steps"),
        ('{"prompt": "x", "cfg_scale": NaN}', "cfg_scale"),
        ('{"prompt": "x", "cfg_scale": Infinity}', "cfg_scale"),
        ('{"prompt": "x", "denoising_strength": -Infinity}', "denoising_strength"),
        ('{"prompt": "x", "width": 1e400}', "width"),
        ('{"prompt": "x", "steps": "many", "cfg_scale": NaN}', "cfg_scale"),  # checked before the types
        ('{"prompt": ["x", NaN]}', "prompt"),
    ],
)
def test_nan_and_infinity_are_a_json_422(edge_client: TestClient, route: str, text: str, field: str) -> None:
    response = raw_post(edge_client, f"/sdapi/v1/{route}", text)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert field in detail_text(response), response.text
    assert no_jobs(edge_client)


def test_a_nan_option_is_refused_and_the_options_keep_working(edge_client: TestClient) -> None:
    for text in (
        '{"eta_ddim": NaN}',
        '{"CLIP_stop_at_last_layers": Infinity}',
        '{"s_noise": -Infinity}',
        '{"nested": {"deep": [NaN]}}',
    ):
        response = raw_post(edge_client, "/sdapi/v1/options", text)
        assert response.status_code == 422, (text, response.text)
        strict_json(response.text)
        after = edge_client.get("/sdapi/v1/options")
        assert after.status_code == 200, after.text
        options = strict_json(after.text)
        assert "nested" not in options and options["eta_ddim"] == 0.0
    assert edge_client.post("/sdapi/v1/options", json={"eta_ddim": 0.5}).status_code == 200
    assert strict_json(edge_client.get("/sdapi/v1/options").text)["eta_ddim"] == 0.5
    assert edge_client.post("/sdapi/v1/options", json={"eta_ddim": 0.0}).status_code == 200


# ===================================================================== text a store or a header cannot hold


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"prompt": "a \\ud800 cat"}', "prompt"),
        ('{"prompt": "a \\u0000 cat"}', "prompt"),
        ('{"prompt": ["ok", "\\udfff"]}', "prompt"),
        ('{"negative_prompt": "\\ud83d"}', "negative_prompt"),
        ('{"prompt": "x", "sampler_name": "Euler\\ud800"}', "sampler_name"),
        ('{"prompt": "x", "sampler_name": "Euler\\u0000"}', "sampler_name"),
        ('{"prompt": "x", "styles": ["fine", "\\ud800"]}', "styles"),
        ('{"prompt": "x", "styles": ["a\\u0000b"]}', "styles"),
        ('{"prompt": "x", "scheduler": "\\udc00"}', "scheduler"),
    ],
)
def test_lone_surrogates_and_nul_are_an_a1111_422(
    edge_client: TestClient, route: str, text: str, field: str
) -> None:
    response = raw_post(edge_client, f"/sdapi/v1/{route}", text)
    assert response.status_code == 422, response.text
    body = strict_json(response.text)
    assert set(body) == {"error", "detail", "body", "errors"}, body
    assert field in detail_text(response), response.text
    assert no_jobs(edge_client)


# ===================================================================== oversized values


def _png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


FAKE_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage after the magic bytes" * 10).decode()


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("txt2img", {"steps": 100_000}, "steps"),
        ("txt2img", {"steps": 2**63}, "steps"),
        ("txt2img", {"width": 8192, "height": 8192}, "width"),
        ("txt2img", {"width": 2**40}, "width"),
        ("txt2img", {"batch_size": 1000}, "batch_size"),
        ("txt2img", {"n_iter": 10_000}, "n_iter"),
        ("txt2img", {"prompt": "p" * 100_000}, "prompt"),
        ("txt2img", {"negative_prompt": "n" * 100_000}, "negative_prompt"),
        ("txt2img", {"styles": ["s"] * 100_000}, "styles"),
        ("txt2img", {"sampler_name": "x" * 100_000}, "sampler_name"),
        ("txt2img", {"seed": 2**64}, "seed"),
        ("txt2img", {"enable_hr": True, "hr_scale": 1e6}, "hr"),
        ("img2img", {"init_images": [FAKE_PNG]}, "init_images"),
        ("img2img", {"init_images": [base64.b64encode(bomb_png(9000)).decode()]}, "init_images"),
        ("img2img", {"init_images": [_png((64, 64))], "mask": FAKE_PNG}, "mask"),
        ("img2img", {"init_images": ["not base64 at all!"]}, "init_images"),
    ],
)
def test_oversized_values_are_a_422_naming_the_field(
    edge_client: TestClient, route: str, body: dict[str, Any], field: str
) -> None:
    response = edge_client.post(f"/sdapi/v1/{route}", json={"prompt": "x", **body})
    assert response.status_code == 422, response.text[:500]
    assert field in detail_text(response), response.text[:500]
    assert no_jobs(edge_client)


def test_the_routes_still_answer_after_the_refusals(edge_client: TestClient) -> None:
    assert edge_client.get("/sdapi/v1/options").status_code == 200
    assert edge_client.get("/sdapi/v1/samplers").status_code == 200
    ok = edge_client.post("/sdapi/v1/png-info", json={"image": png_b64()})
    assert ok.status_code == 200, ok.text
