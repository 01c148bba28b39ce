"""The model registry: admins write, everyone reads, jobs are checked against it at submit."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sdfleet.config import Settings
from sdfleet.domain import ModelKind, ModelRecord
from tests.integration.api.conftest import MakeClient, create_key, store_of

SHA = "a" * 64


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"not really weights")
    return path


def test_register_local_and_remote_models(client: TestClient, checkpoint: Path) -> None:
    r = client.post(
        "/v1/models", json={"name": "tiny", "kind": "checkpoint", "arch": "sd1", "source": str(checkpoint)}
    )
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(b"not really weights").hexdigest()
    assert r.json()["hash"] == r.json()["sha256"][:10]
    assert r.json()["size"] == 18
    lora = {
        "name": "pixel-art",
        "kind": "lora",
        "arch": "sd1",
        "source": "https://example.com/pixel.safetensors",
        "sha256": SHA,
        "size": 1234,
        "trigger_words": ["pixelart"],
    }
    assert client.post("/v1/models", json=lora).status_code == 201
    listed = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["tiny", "pixel-art"]
    assert [m["name"] for m in client.get("/v1/models", params={"kind": "lora"}).json()["models"]] == [
        "pixel-art"
    ]
    assert client.get("/v1/models/pixel-art").json()["trigger_words"] == ["pixelart"]
    assert client.delete("/v1/models/pixel-art").status_code == 204
    assert client.get("/v1/models/pixel-art").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "https://x.org/a.safetensors"}, "sha256"),
        ({"source": "https://x.org/a.safetensors", "sha256": SHA}, "size"),
        ({"source": "relative/path.safetensors"}, "source"),
        ({"source": "/nope/missing.safetensors"}, "source"),
        ({"source": "ftp://x.org/a"}, "source"),
        ({"source": "hf://only-org", "sha256": SHA, "size": 1}, "source"),
        ({"source": "civitai://model/12", "sha256": SHA, "size": 1}, "source"),
        ({"source": "https://x.org/a.ckpt", "sha256": SHA, "size": 1}, "source"),
        ({"source": "https://x.org/a.safetensors", "sha256": "xyz", "size": 1}, "sha256"),
        ({"source": "https://x.org/a.safetensors", "sha256": SHA, "size": 1, "name": "../etc"}, "name"),
        ({"source": "https://x.org/a.safetensors", "sha256": SHA, "size": 1, "arch": "sd9"}, "arch"),
        ({"source": "https://x.org/a.safetensors", "sha256": SHA, "size": 1, "resolution": 0}, "resolution"),
    ],
)
def test_bad_registrations_name_the_field(client: TestClient, body: dict[str, object], field: str) -> None:
    r = client.post("/v1/models", json={"name": "m", "kind": "lora", **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_a_checkpoints_resolution_is_stored_at_registration_else_its_architectures(
    client: TestClient, checkpoint: Path
) -> None:
    def add(name: str, **extra: object) -> dict[str, object]:
        body = {"name": name, "kind": "checkpoint", "source": str(checkpoint), **extra}
        r = client.post("/v1/models", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    assert add("tiny", arch="sd1", resolution=64)["resolution"] == 64
    assert client.get("/v1/models/tiny").json()["resolution"] == 64
    assert add("plain-xl", arch="sdxl")["resolution"] == 1024
    assert add("unknown")["resolution"] is None
    lora = {"name": "l", "kind": "lora", "source": str(checkpoint), "arch": "sd1", "resolution": 64}
    assert client.post("/v1/models", json=lora).json()["resolution"] is None


def test_jobs_are_checked_against_the_registry(client: TestClient) -> None:
    def model(name: str, kind: str, arch: str) -> None:
        r = client.post(
            "/v1/models",
            json={
                "name": name,
                "kind": kind,
                "arch": arch,
                "sha256": SHA,
                "size": 1,
                "source": f"https://example.com/{name}.safetensors",
            },
        )
        assert r.status_code == 201, r.text

    model("base-xl", "checkpoint", "sdxl")
    model("base-15", "checkpoint", "sd1")
    model("style-xl", "lora", "sdxl")
    model("vae-15", "vae", "sd1")

    def submit(**params: object) -> tuple[int, dict[str, object]]:
        r = client.post("/v1/jobs", json={"params": {"prompt": "x", "width": 64, "height": 64, **params}})
        return r.status_code, r.json()

    status, job = submit(model="base-xl", prompt="a cat <lora:style-xl:0.7>")
    assert status == 201
    status, err = submit(model="nope")
    assert (status, err["error"]["field"]) == (422, "params.model")  # type: ignore[index]
    status, err = submit(model="base-15", prompt="<lora:style-xl:1>")
    assert (status, err["error"]["field"]) == (422, "params.prompt")  # type: ignore[index]
    assert "made for SDXL" in err["error"]["message"]  # type: ignore[index]
    status, err = submit(model="vae-15")
    assert "is a vae, not a checkpoint" in err["error"]["message"]  # type: ignore[index]
    status, err = submit(model="base-15", loras=[{"name": "missing"}])
    assert err["error"]["field"] == "params.loras.0.name"  # type: ignore[index]
    # the checkpoint's architecture becomes the job's requirement
    wid = client.post(
        "/v1/worker/register", json={"name": "sd1-only", "capabilities": {"archs": ["sd1"]}}
    ).json()
    claim = client.post("/v1/worker/claim", json={"worker_id": wid["worker_id"]}).json()
    assert claim["jobs"] == []


def test_only_admins_write_the_registry(make_client: MakeClient) -> None:
    secured = make_client(auth="required")
    user = create_key(secured, "t1", "user")
    admin = create_key(secured, "ops", "admin")
    body = {"name": "m", "kind": "lora", "source": "https://x.org/m.safetensors", "sha256": SHA, "size": 1}
    assert secured.post("/v1/models", json=body, headers=user).status_code == 403
    assert secured.post("/v1/models", json=body, headers=admin).status_code == 201
    assert secured.get("/v1/models", headers=user).json()["models"][0]["name"] == "m"
    assert secured.delete("/v1/models/m", headers=user).status_code == 403


def test_cli_models_add_list_remove(settings: Settings, checkpoint: Path) -> None:
    env_args = ["--data-dir", str(settings.data_dir)]

    def run(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "sdfleet", "models", *args, *env_args],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout + out.stderr

    assert "registered" in run("add", "tiny", str(checkpoint), "--arch", "sd1")
    assert "tiny" in run("list")
    run("remove", "tiny")
    assert "tiny" not in run("list")


def test_sources_and_training_provenance_are_for_admins_and_the_owner(make_client: MakeClient) -> None:
    client = make_client()
    admin = create_key(client, "ops", "admin")
    owner = create_key(client, "tenant-a", "user")
    other = create_key(client, "tenant-b", "user")
    shared = {
        "name": "house-style",
        "kind": "lora",
        "arch": "sd1",
        "source": "https://internal.example/secret/house.safetensors",
        "sha256": SHA,
        "size": 10,
    }
    assert client.post("/v1/models", json=shared, headers=admin).status_code == 201
    trained = ModelRecord(  # what a finished train_lora job of tenant-a registers
        name="a-style",
        kind=ModelKind.LORA,
        arch="sd1",
        source="blob:outputs/tenant-a/job0123abcd/1-0.safetensors",
        sha256="b" * 64,
        size=20,
        description="trained by job job0123abcd on base",
        created_at=1.0,
    )

    async def put() -> None:
        await store_of(client).write(lambda tx: tx.upsert_model(trained))

    client.portal.call(put)  # type: ignore[union-attr]

    def seen(headers: dict[str, str]) -> dict[str, dict[str, object]]:
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 200, r.text
        return {m["name"]: m for m in r.json()["models"]}

    by_other = seen(other)
    assert by_other["house-style"]["source"] is None
    assert by_other["house-style"]["sha256"] == SHA and by_other["house-style"]["size"] == 10
    assert by_other["a-style"]["source"] is None and by_other["a-style"]["trained_by"] is None
    assert "job0123abcd" not in json.dumps(by_other) and "tenant-a" not in json.dumps(by_other)
    assert by_other["a-style"]["description"] == "trained on base"
    one = client.get("/v1/models/a-style", headers=other).json()
    assert one["source"] is None and "job0123abcd" not in json.dumps(one)
    a1111 = json.dumps(client.get("/sdapi/v1/loras", headers=other).json())
    assert "internal.example" not in a1111 and "job0123abcd" not in a1111 and "tenant-a" not in a1111

    by_owner = seen(owner)
    assert by_owner["a-style"]["source"] == trained.source
    assert by_owner["a-style"]["trained_by"] == {"tenant": "tenant-a", "job_id": "job0123abcd"}
    assert by_owner["house-style"]["source"] is None  # not theirs

    by_admin = seen(admin)
    assert by_admin["house-style"]["source"] == shared["source"]
    assert by_admin["a-style"]["trained_by"] == {"tenant": "tenant-a", "job_id": "job0123abcd"}
    assert "internal.example" in json.dumps(client.get("/sdapi/v1/loras", headers=admin).json())
