"""``train_lora`` jobs through the API, with a hand-driven worker: validation at submit (fields named),
the fenced checkpoint report, retention (old checkpoint blobs deleted), ``job.checkpoint`` webhooks, the
resume checkpoint handed to the next worker, cancel, and the LoRA registered on success — on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdfleet.api.deps import AppContext
from tests.integration.api.conftest import MakeClient, ctx_of, store_of


def png(colour: tuple[int, int, int] = (200, 20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def client(make_client: MakeClient, database_url: str, tmp_path: Path) -> TestClient:
    client = make_client(database_url=database_url)
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"base weights")
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"lora weights")
    for body in (
        {"name": "base", "kind": "checkpoint", "arch": "sd1", "source": str(base)},
        {"name": "a-lora", "kind": "lora", "arch": "sd1", "source": str(other)},
    ):
        assert client.post("/v1/models", json=body).status_code == 201
    return client


def train_body(**params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "zqx-style",
        "base_model": "base",
        "images": [
            {"ref": "data:image/png;base64," + base64.b64encode(png()).decode(), "caption": "a zqx disc"},
            {"ref": base64.b64encode(png((20, 20, 200))).decode()},
        ],
        "instance_prompt": "a zqx disc",
        "trigger_word": "zqx",
        "resolution": 64,
        "steps": 30,
        "checkpoint_every": 10,
        "keep_checkpoints": 2,
        "validation_prompts": ["a zqx disc"],
    }
    spec.update(params)
    return {"kind": "train_lora", "params": spec}


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"base_model": "nope"}, "params.base_model", 422),
        ({"base_model": "a-lora"}, "params.base_model", 422),
        ({"name": "base"}, "params.name", 422),
        ({"name": None}, "params.name", 422),
        ({"steps": 1_000_000}, "params.steps", 422),
        ({"steps": 30_000}, "params.steps", 422),  # the deployment's limit (20 000), below the trainer's
        ({"resolution": 4096}, "params.resolution", 422),
        ({"rank": 512}, "params.rank", 422),
        ({"images": []}, "params.images", 422),
        ({"images": [{"ref": "not an image"}]}, "params.images.0.ref", 422),
        ({"images": [{"ref": "blob:inputs/other-tenant/x.png"}]}, "params.images.0.ref", 404),
        ({"trigger_word": "sks"}, "params.trigger_word", 422),
        ({"lr_warmup_steps": 5}, "params.lr_warmup_steps", 422),
        ({"prompt": "a generation field"}, "params.prompt", 422),
    ],
)
def test_submit_validation_names_the_field(
    client: TestClient, change: dict[str, Any], field: str, status: int
) -> None:
    r = client.post("/v1/jobs", json=train_body(**change))
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field, r.text


def test_inputs_upload_and_reference(client: TestClient) -> None:
    r = client.post("/v1/inputs", content=png(), headers={"content-type": "image/png"})
    assert r.status_code == 201, r.text
    ref = r.json()["ref"]
    assert ref.startswith("blob:inputs/") and ref.endswith(".png")
    assert client.post("/v1/inputs", content=png()).json()["ref"] == ref  # stored once
    assert client.post("/v1/inputs", content=b"GIF89a....").status_code == 422
    r = client.post("/v1/jobs", json=train_body(images=[{"ref": ref, "caption": "a zqx disc"}]))
    assert r.status_code == 201, r.text
    assert r.json()["params"]["images"] == [{"ref": ref, "caption": "a zqx disc"}]


def register(client: TestClient, name: str, kinds: list[str], price: float = 0.0) -> str:
    body = {"name": name, "price_per_hour": price, "capabilities": {"kinds": kinds}}
    r = client.post("/v1/worker/register", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["worker_id"])


def claim(client: TestClient, worker_id: str) -> list[dict[str, Any]]:
    r = client.post("/v1/worker/claim", json={"worker_id": worker_id, "max_jobs": 4})
    assert r.status_code == 200, r.text
    return list(r.json()["jobs"])


def store_checkpoint(
    client: TestClient, worker_id: str, job: dict[str, Any], step: int, epoch: int | None = None
) -> Any:
    epoch = job["epoch"] if epoch is None else epoch
    r = client.post(
        f"/v1/worker/jobs/{job['job_id']}/checkpoint/upload",
        json={"worker_id": worker_id, "epoch": epoch, "step": step},
    )
    if r.status_code != 200:
        return r
    target = r.json()
    data = f"checkpoint {step}".encode()
    assert client.put(target["url"], content=data).status_code == 201
    return client.post(
        f"/v1/worker/jobs/{job['job_id']}/checkpoint",
        json={
            "worker_id": worker_id,
            "epoch": epoch,
            "step": step,
            "key": target["key"],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )


def webhook_types(ctx: AppContext, client: TestClient, job_id: str) -> list[str]:
    async def read() -> list[str]:
        return [m.event_type for m in await store_of(client).read(lambda tx: tx.list_webhooks(job_id))]

    return list(client.portal.call(read))  # type: ignore[union-attr]


def test_checkpoints_retention_resume_and_registration(client: TestClient, tmp_path: Path) -> None:
    ctx = ctx_of(client)
    assert client.put("/v1/account/webhook", json={"url": "http://127.0.0.1:9/hook"}).status_code == 200
    job_id = client.post("/v1/jobs", json=train_body()).json()["id"]

    # a generation-only worker does not get it; a training worker does
    gen = register(client, "gen", ["txt2img", "img2img"])
    assert claim(client, gen) == []
    trainer = register(client, "trainer", ["txt2img", "img2img", "train_lora"], price=3.6)
    [job] = claim(client, trainer)
    assert job["kind"] == "train_lora" and job["resume"] is None
    assert [m["name"] for m in job["models"]] == ["base"]
    assert len(job["inputs"]) == 2 and all(
        ref in job["inputs"] for ref in [i["ref"] for i in job["params"]["images"]]
    )
    assert [u["content_type"] for u in job["uploads"]] == ["application/vnd.safetensors", "image/png"]
    assert job["uploads"][0]["key"].endswith(".safetensors")

    # progress with loss / speed / ETA
    beat = {
        "job_id": job_id,
        "epoch": job["epoch"],
        "step": 5,
        "total": 30,
        "loss": 0.25,
        "it_per_s": 2.0,
        "eta_seconds": 12.5,
    }
    r = client.post("/v1/worker/heartbeat", json={"worker_id": trainer, "jobs": [beat]})
    assert r.json()["jobs"][0]["action"] == "continue"
    progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert progress == {
        "step": 5,
        "total": 30,
        "fraction": pytest.approx(5 / 30, abs=1e-3),
        "loss": 0.25,
        "it_per_s": 2.0,
        "eta_seconds": 12.5,
    }

    keys = []
    tenant = client.get("/v1/account").json()["tenant"]
    for step in (10, 20, 30):
        r = store_checkpoint(client, trainer, job, step)
        assert r.status_code == 200, r.text
        keys.append(f"checkpoints/{tenant}/{job_id}/{job['epoch']}-{step:08d}.safetensors")
    assert r.json()["kept"] == [20, 30] and r.json()["deleted"] == 1
    sizes = client.portal.call(ctx.blobs.sizes, keys)  # type: ignore[union-attr]
    assert [sizes[k] is not None for k in keys] == [False, True, True]
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert [c["step"] for c in view["checkpoints"]] == [20, 30]
    assert webhook_types(ctx, client, job_id).count("job.checkpoint") == 3

    # a report under another epoch, or of a key that is not this job's, is refused
    assert store_checkpoint(client, trainer, job, 40, epoch=job["epoch"] + 1).status_code == 409
    r = client.post(
        f"/v1/worker/jobs/{job_id}/checkpoint",
        json={"worker_id": trainer, "epoch": job["epoch"], "step": 40, "key": keys[1], "size": 1},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "key"

    # the worker goes away: the next one gets the latest checkpoint (an interruption, not a failure)
    r = client.post(
        "/v1/worker/release",
        json={"worker_id": trainer, "job_id": job_id, "epoch": job["epoch"], "engine_seconds": 10.0},
    )
    assert r.json()["state"] == "queued"
    second = register(client, "second", ["train_lora"], price=7.2)
    [again] = claim(client, second)
    assert again["epoch"] == job["epoch"] + 1
    assert again["resume"]["step"] == 30 and again["resume"]["key"] == keys[2]
    assert client.get(again["resume"]["url"]).content == b"checkpoint 30"
    # the old holder's reports are stale now
    assert store_checkpoint(client, trainer, job, 40).status_code == 409

    # success: the LoRA is output 0 and is registered under the job's name
    lora = b"kohya lora bytes"
    outputs = []
    for up, data in zip(again["uploads"], [lora, png()], strict=True):
        assert client.put(up["url"], content=data).status_code == 201
        outputs.append(
            {
                "index": up["index"],
                "key": up["key"],
                "content_type": up["content_type"],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    r = client.post(
        "/v1/worker/complete",
        json={
            "worker_id": second,
            "job_id": job_id,
            "epoch": again["epoch"],
            "outputs": outputs,
            "engine_seconds": 5.0,
            "result": {"training": {"resumed_from": 30}},
        },
    )
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "accepted", r.text
    done = client.get(f"/v1/jobs/{job_id}").json()
    assert done["state"] == "succeeded" and done["interruptions"] == 1 and done["failures"] == 0
    assert done["result"]["lora"]["name"] == "zqx-style"
    assert done["result"]["training"]["resumed_from"] == 30
    # cost: 10 s at $3.60/h + 5 s at $7.20/h
    assert done["cost_usd"] == pytest.approx(0.01 + 0.01)
    model = client.get("/v1/models/zqx-style").json()
    assert model["kind"] == "lora" and model["arch"] == "sd1" and model["trigger_words"] == ["zqx"]
    assert model["sha256"] == hashlib.sha256(lora).hexdigest() and model["size"] == len(lora)
    finished = [json.loads(m) for m in _payloads(ctx, client, job_id, "job.finished")]
    assert finished[-1]["data"]["lora"]["name"] == "zqx-style"

    # usable at once: a generation job naming it is accepted, and its claim carries a signed URL
    r = client.post(
        "/v1/jobs",
        json={
            "params": {"prompt": "a zqx disc <lora:zqx-style:1>", "model": "base", "width": 64, "height": 64}
        },
    )
    assert r.status_code == 201, r.text
    [gen_job] = claim(client, gen)
    source = {m["name"]: m for m in gen_job["models"]}["zqx-style"]
    assert source["source"].startswith("blob:") and source["url"]
    assert client.get(source["url"]).content == lora


def _payloads(ctx: AppContext, client: TestClient, job_id: str, event_type: str) -> list[str]:
    async def read() -> list[str]:
        rows = await store_of(client).read(lambda tx: tx.list_webhooks(job_id))
        return [m.payload for m in rows if m.event_type == event_type]

    return list(client.portal.call(read))  # type: ignore[union-attr]


def test_cancel_reaches_the_training_worker(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json=train_body()).json()["id"]
    worker = register(client, "trainer", ["train_lora"])
    [job] = claim(client, worker)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "running"
    beat = {"job_id": job_id, "epoch": job["epoch"], "step": 3, "total": 30}
    answer = client.post("/v1/worker/heartbeat", json={"worker_id": worker, "jobs": [beat]}).json()
    assert answer["jobs"][0]["action"] == "cancel"
    r = client.post(
        "/v1/worker/fail",
        json={
            "worker_id": worker,
            "job_id": job_id,
            "epoch": job["epoch"],
            "code": "canceled",
            "retryable": False,
        },
    )
    assert r.json()["state"] == "canceled"


def test_cli_train_uploads_a_folder_with_caption_sidecars(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sdfleet.cli import app
    from tests.support.live import Orchestrator, make_settings

    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a.png").write_bytes(png())
    (folder / "a.txt").write_text("a zqx disc, red\n")
    (folder / "b.jpg").write_bytes(_jpeg())
    (folder / "notes.md").write_text("ignored")
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"base weights")
    orchestrator = Orchestrator(make_settings(tmp_path))
    orchestrator.start()
    try:
        import httpx

        with httpx.Client(base_url=orchestrator.url) as api:
            body = {"name": "base", "kind": "checkpoint", "arch": "sd1", "source": str(base)}
            assert api.post("/v1/models", json=body).status_code == 201
            args = ["train", str(folder), "-m", "base", "--name", "zqx", "--trigger", "zqx", "--steps", "50"]
            args += ["--resolution", "64", "--server", orchestrator.url, "--no-wait"]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            [job] = api.get("/v1/jobs", params={"kind": "train_lora"}).json()["jobs"]
            params = job["params"]
            assert params["instance_prompt"] == "a photo of zqx" and params["steps"] == 50
            assert [i["caption"] for i in params["images"]] == ["a zqx disc, red", None]
            assert all(i["ref"].startswith("blob:inputs/") for i in params["images"])
            bad = CliRunner().invoke(app, [*args[:3], "nope", *args[4:]])
            assert bad.exit_code == 2 and "base_model" in bad.output
    finally:
        orchestrator.stop()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.s3
def test_checkpoints_on_s3_presigned_and_pruned(
    make_client: MakeClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """With the blob store on S3 the worker PUTs checkpoints to presigned URLs; old ones are deleted
    from the bucket; the resume URL and the registered LoRA's URL are presigned GETs."""
    import os
    import uuid

    import httpx

    from tests.support.services import S3Server

    s3: S3Server = request.getfixturevalue("s3_server")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", s3.access_key)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    client = make_client(blob_url=s3.url(f"train-{uuid.uuid4().hex[:8]}"))
    ctx = ctx_of(client)
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"base weights")
    body = {"name": "base", "kind": "checkpoint", "arch": "sd1", "source": str(base)}
    assert client.post("/v1/models", json=body).status_code == 201
    job_id = client.post("/v1/jobs", json=train_body(validation_prompts=[])).json()["id"]
    worker = register(client, "trainer", ["train_lora"])
    [job] = claim(client, worker)
    keys = []
    octet = {"content-type": "application/octet-stream"}
    with httpx.Client(timeout=30) as direct:
        for step in (10, 20, 30):
            up = client.post(
                f"/v1/worker/jobs/{job_id}/checkpoint/upload",
                json={"worker_id": worker, "epoch": job["epoch"], "step": step},
            ).json()
            assert up["url"].startswith("http://127.0.0.1:8333/") or "X-Amz-Signature" in up["url"]
            headers = {**octet, **up.get("headers", {})}
            assert direct.put(up["url"], content=f"state {step}".encode(), headers=headers).is_success
            r = client.post(
                f"/v1/worker/jobs/{job_id}/checkpoint",
                json={"worker_id": worker, "epoch": job["epoch"], "step": step, "key": up["key"], "size": 7},
            )
            assert r.status_code == 200, r.text
            keys.append(up["key"])
        sizes = client.portal.call(ctx.blobs.sizes, keys)  # type: ignore[union-attr]
        assert [sizes[k] is not None for k in keys] == [False, True, True]
        client.post("/v1/worker/release", json={"worker_id": worker, "job_id": job_id, "epoch": job["epoch"]})
        [again] = claim(client, worker)
        assert direct.get(again["resume"]["url"]).content == b"state 30"
        lora = b"lora on s3"
        [up] = again["uploads"]
        headers = {"content-type": up["content_type"], **up.get("headers", {})}
        assert direct.put(up["url"], content=lora, headers=headers).is_success
        item = {
            "index": 0,
            "key": up["key"],
            "content_type": up["content_type"],
            "sha256": hashlib.sha256(lora).hexdigest(),
        }
        r = client.post(
            "/v1/worker/complete",
            json={"worker_id": worker, "job_id": job_id, "epoch": again["epoch"], "outputs": [item]},
        )
        assert r.json()["results"][0]["status"] == "accepted", r.text
        url = client.post("/v1/worker/models/url", json={"worker_id": worker, "name": "zqx-style"}).json()[
            "url"
        ]
        assert direct.get(url).content == lora


def _finish_training(client: TestClient, worker: str, job: dict[str, Any], lora: bytes) -> dict[str, Any]:
    outputs = []
    for up, data in zip(job["uploads"], [lora, png()], strict=True):
        assert client.put(up["url"], content=data).status_code == 201
        outputs.append(
            {
                "index": up["index"],
                "key": up["key"],
                "content_type": up["content_type"],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    r = client.post(
        "/v1/worker/complete",
        json={
            "worker_id": worker,
            "job_id": job["job_id"],
            "epoch": job["epoch"],
            "outputs": outputs,
            "engine_seconds": 1.0,
        },
    )
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "accepted", r.text
    return dict(client.get(f"/v1/jobs/{job['job_id']}").json())


def test_a_training_job_never_replaces_a_model_it_does_not_own(client: TestClient, tmp_path: Path) -> None:
    # at submit: the name of an admin-registered LoRA is a 409 naming the field, and stores nothing
    before = client.get("/v1/jobs").json()["jobs"]
    r = client.post("/v1/jobs", json=train_body(name="a-lora"))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["field"] == "params.name"
    assert client.get("/v1/jobs").json()["jobs"] == before
    shared = client.get("/v1/models/a-lora").json()

    # at completion: a LoRA registered under the name after submit is left alone; the trained one is
    # registered under a derived name, and the job's result says so
    job_id = client.post("/v1/jobs", json=train_body(name="late-name")).json()["id"]
    trainer = register(client, "trainer", ["train_lora"])
    [job] = claim(client, trainer)
    late = tmp_path / "late.safetensors"
    late.write_bytes(b"the admin's late lora")
    body = {"name": "late-name", "kind": "lora", "arch": "sd1", "source": str(late)}
    assert client.post("/v1/models", json=body).status_code == 201
    done = _finish_training(client, trainer, job, b"trained lora bytes")
    assert done["state"] == "succeeded"
    result = done["result"]["lora"]
    assert result["name"] == f"late-name-{job_id[-8:]}" and result["requested_name"] == "late-name"
    assert "do not own" in result["problem"]
    kept = client.get("/v1/models/late-name").json()
    assert kept["sha256"] == hashlib.sha256(b"the admin's late lora").hexdigest()
    mine = client.get(f"/v1/models/late-name-{job_id[-8:]}").json()
    assert mine["sha256"] == hashlib.sha256(b"trained lora bytes").hexdigest()
    assert client.get("/v1/models/a-lora").json() == shared

    # a LoRA the tenant trained is theirs: training under its name again replaces it
    again = client.post("/v1/jobs", json=train_body(name=result["name"]))
    assert again.status_code in (200, 201, 202), again.text
