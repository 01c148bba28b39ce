"""IP-Adapters and image encoders in the registry, checked at submit: a unit naming an IP-Adapter of another
SD family than the checkpoint, or one with no registered image encoder that gives what it reads, or with a
module that does not fit it, is a 422 naming the unit's field; otherwise the encoder chosen is written into the
unit, so the worker fetches it."""

from __future__ import annotations

from fastapi.testclient import TestClient

SHA = "b" * 64
RED = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _add(client: TestClient, name: str, kind: str, arch: str | None) -> None:
    body = {"name": name, "kind": kind, "arch": arch, "sha256": SHA, "size": 1}
    r = client.post("/v1/models", json={**body, "source": f"https://example.com/{name}.safetensors"})
    assert r.status_code == 201, r.text


def test_ip_adapter_units_are_checked_and_get_their_encoder(client: TestClient) -> None:
    _add(client, "base-15", "checkpoint", "sd1")
    _add(client, "ip-adapter_sd15", "ip_adapter", "sd1-vit-h")
    _add(client, "ip-adapter_sdxl", "ip_adapter", "sdxl-vit-bigg")
    _add(client, "canny-15", "controlnet", "sd1")

    def submit(*units: dict[str, object]) -> tuple[int, dict[str, object]]:
        params = {"prompt": "x", "width": 64, "height": 64, "model": "base-15", "controlnet": list(units)}
        r = client.post("/v1/jobs", json={"params": params})
        return r.status_code, r.json()

    def error(*units: dict[str, object]) -> tuple[str, str]:
        status, body = submit(*units)
        assert status == 422, body
        return body["error"]["field"], body["error"]["message"]  # type: ignore[index]

    sd15 = {"model": "ip-adapter_sd15", "module": "ip-adapter_clip_sd15", "image": RED}
    field, message = error({**sd15, "model": "ip-adapter_sdxl", "module": "ip-adapter_clip_sdxl"})
    assert field == "params.controlnet.0.model" and "made for SDXL" in message
    field, message = error(sd15)  # no image encoder registered
    assert field == "params.controlnet.0.model" and "image_encoder" in message
    _add(client, "clip-vit-bigg", "image_encoder", "vit-bigg")
    assert error(sd15)[0] == "params.controlnet.0.model"  # one that does not fit is no better
    _add(client, "clip-vit-h", "image_encoder", "vit-h")
    assert error({**sd15, "module": "ip-adapter_clip_sdxl"})[0] == "params.controlnet.0.module"
    assert error({**sd15, "module": "canny"})[0] == "params.controlnet.0.module"
    assert error({"model": "canny-15", "module": "ip-adapter_clip_h", "image": RED})[0] == (
        "params.controlnet.0.module"
    )
    assert error({**sd15, "image_encoder": "clip-vit-bigg"})[0] == "params.controlnet.0.image_encoder"
    assert error({**sd15, "image_encoder": "base-15"})[0] == "params.controlnet.0.image_encoder"
    status, job = submit({"model": "canny-15", "image": RED}, sd15)
    assert status == 201, job
    units = job["params"]["controlnet"]  # type: ignore[index]
    assert units[1]["image_encoder"] == "clip-vit-h" and units[0].get("image_encoder") is None
    # an arch that is no IP-Adapter's is refused at registration
    r = client.post(
        "/v1/models",
        json={
            "name": "odd",
            "kind": "ip_adapter",
            "arch": "vit-h",
            "sha256": SHA,
            "size": 1,
            "source": "https://example.com/odd.safetensors",
        },
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "arch"
