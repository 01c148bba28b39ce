"""``restore_faces`` and the face-restorer list: with no restorer registered a call succeeds and says so; a
registered one is listed by A1111's family name and chosen for a job that names none (which setting chooses
the family is the mapping's unit test); an unregistered one is refused at submit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from sdfleet.engine.fake import FakeEngine
from tests.support.live import WorkerPool


async def test_restore_faces_without_a_restorer_succeeds_and_says_so(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    assert (await api.get("/sdapi/v1/face-restorers")).json() == []
    r = await api.post("/sdapi/v1/txt2img", json={"prompt": "a face", "steps": 2, "restore_faces": True})
    assert r.status_code == 200, r.text
    notes = json.loads(r.json()["info"])["sdfleet"]["notes"]
    assert any("no face restorer is registered" in n for n in notes), notes


async def test_a_registered_restorer_is_listed_chosen_and_routed(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    for name, family in (("gfpgan-1.4", "gfpgan"), ("codeformer-0.1", "codeformer")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(b"weights")
        body = {"name": name, "kind": "face_restorer", "arch": family, "source": str(path)}
        assert (await admin.post("/v1/models", json=body)).status_code == 201
    listed = [f["name"] for f in (await api.get("/sdapi/v1/face-restorers")).json()]
    assert listed == ["CodeFormer", "GFPGAN"]
    # the native API picks one when the job names none (CodeFormer first), and only a worker that can
    # load face restorers takes the job
    job = (await admin.post("/v1/jobs", json={"params": {"prompt": "a face", "restore_faces": True}})).json()
    assert job["params"]["face_restorer"] == "codeformer-0.1"
    await admin.post(f"/v1/jobs/{job['id']}/cancel")
    # a restorer that is not registered is refused at submit, naming the field
    r = await admin.post(
        "/v1/jobs", json={"params": {"prompt": "a face", "restore_faces": True, "face_restorer": "nope"}}
    )
    assert r.status_code == 422 and "params.face_restorer" in r.text and "nope" in r.text
