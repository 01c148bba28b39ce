"""``/sdapi/v1/options`` carries A1111's whole settings table: every key with its default, stored-only keys
kept per tenant and read back, a wrong type refused with a 422 naming the key, unknown keys ignored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sdfleet.a1111.settings_table import SETTINGS_TABLE
from sdfleet.api.app import create_app
from sdfleet.config import Settings
from tests.integration.a1111.conftest import NO_WORKER_TIMEOUT
from tests.integration.api.conftest import create_key


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("settings"),
        a1111_request_timeout=NO_WORKER_TIMEOUT,
        allowed_hosts=["testserver"],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_get_options_reports_every_a1111_setting_with_its_default(client: TestClient) -> None:
    headers = create_key(client, "fresh", "user")
    options = client.get("/sdapi/v1/options", headers=headers).json()
    assert set(options) == set(SETTINGS_TABLE)
    assert options["ESRGAN_tile"] == 192 and options["ESRGAN_tile_overlap"] == 8
    assert options["send_seed"] is True and options["live_previews_enable"] is True
    assert options["upscaler_for_img2img"] is None and options["code_former_weight"] == 0.5
    assert list(options)[:3] == ["samples_save", "samples_format", "samples_filename_pattern"]


def test_stored_only_settings_are_per_tenant_and_read_back(client: TestClient) -> None:
    alice, bob = create_key(client, "alice-s", "user"), create_key(client, "bob-s", "user")
    body = {
        "ESRGAN_tile": 256,
        "show_progressbar": False,
        "face_restoration_model": "GFPGAN",
        "realesrgan_enabled_models": ["R-ESRGAN 4x+"],
        "img_max_size_mp": 12.5,
        "some_extension_setting": 1,
    }
    response = client.post("/sdapi/v1/options", json=body, headers=alice)
    assert response.status_code == 200 and response.json() is None
    mine = client.get("/sdapi/v1/options", headers=alice).json()
    assert {k: mine[k] for k in body if k != "some_extension_setting"} == {
        k: v for k, v in body.items() if k != "some_extension_setting"
    }
    assert "some_extension_setting" not in mine
    theirs = client.get("/sdapi/v1/options", headers=bob).json()
    assert theirs["ESRGAN_tile"] == 192 and theirs["show_progressbar"] is True


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ({"ESRGAN_tile": "big"}, "ESRGAN_tile", "must be an integer"),
        ({"show_progressbar": "no"}, "show_progressbar", "must be true or false"),
        ({"code_former_weight": [0.5]}, "code_former_weight", "must be a number"),
        ({"hide_samplers": "DDIM"}, "hide_samplers", "must be a list of strings"),
    ],
)
def test_a_known_key_with_a_wrong_type_is_a_422_naming_it(
    client: TestClient, body: dict[str, object], key: str, words: str
) -> None:
    headers = create_key(client, f"typed-{key}", "user")
    response = client.post("/sdapi/v1/options", json={"send_size": False, **body}, headers=headers)
    assert response.status_code == 422
    assert key in response.json()["detail"] and words in response.json()["detail"]
    # nothing of the body was stored
    assert client.get("/sdapi/v1/options", headers=headers).json()["send_size"] is True
