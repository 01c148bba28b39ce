"""Validation at the edge of the native API (issue 14): poison strings, non-finite numbers, malformed bodies,
unbounded fields and broken images are a 4xx naming the field — and nothing is stored, so the queue, the
listings and the claims keep working."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdfleet.config import Settings
from tests.integration.api.conftest import MakeClient, run_one_job_as_worker, store_of

PARAMS: dict[str, Any] = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4}
TXT: dict[str, Any] = {"kind": "txt2img", "params": PARAMS}
TRAIN: dict[str, Any] = {
    "kind": "train_lora",
    "params": {"base_model": "base", "name": "mine", "instance_prompt": "a photo", "images": [{"ref": "x"}]},
}


def raw_post(client: TestClient, body: bytes | Any, path: str = "/v1/jobs", **headers: str) -> Any:
    """POST a body as given: JSON text is written with ASCII escapes, so lone surrogates and NaN go out as
    ``\\ud800`` and ``NaN`` exactly as a hostile client sends them."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"content-type": "application/json", **headers})


def stored_jobs(client: TestClient) -> list[Any]:
    return client.portal.call(store_of(client).read, lambda tx: tx.list_jobs(tenant=None))  # type: ignore[union-attr]


def stored_inputs(settings: Settings) -> list[Path]:
    root = Path(settings.data_dir) / "blobs" / "inputs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def png(size: tuple[int, int] = (64, 64), color: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb_png(side: int) -> bytes:
    """A real decompression bomb: a black side × side PNG, a few kB on the wire."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(b"\x00" * (side + 1)) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


FAKE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # the right magic bytes, garbage after
TRUNCATED_PNG = png((256, 256), 17)[:-300]

POISON: list[tuple[str, dict[str, Any], str]] = [
    ("prompt", {**TXT, "params": {**PARAMS, "prompt": "\ud800"}}, "params.prompt"),
    (
        "negative prompt",
        {**TXT, "params": {**PARAMS, "negative_prompt": "ok \udfff"}},
        "params.negative_prompt",
    ),
    ("sampler name", {**TXT, "params": {**PARAMS, "sampler_name": "Euler\ud800"}}, "params.sampler_name"),
    ("a style", {**TXT, "params": {**PARAMS, "styles": ["a", "\ud83d"]}}, "params.styles.1"),
    ("a LoRA name", {**TXT, "params": {**PARAMS, "loras": [{"name": "\ud800"}]}}, "params.loras.0.name"),
    ("a label value", {**TXT, "labels": {"run": "\ud800"}}, "labels.run"),
    ("a label key", {**TXT, "labels": {"\ud800": "v"}}, "labels.\\ud800"),  # escaped in the answer
    ("a NUL label", {**TXT, "labels": {"run": "a\x00b"}}, "labels.run"),
    ("a NUL idempotency key", {**TXT, "idempotency_key": "k\x00"}, "idempotency_key"),
    ("the webhook URL", {**TXT, "webhook_url": "http://example.com/\ud800"}, "webhook_url"),
    (
        "a training prompt",
        {"kind": "train_lora", "params": {**TRAIN["params"], "instance_prompt": "\ud800"}},
        "params.instance_prompt",
    ),
    ("an unknown field's key", {**TXT, "params": {**PARAMS, "\ud800": 1}}, "params.\\ud800"),
    ("NaN", {**TXT, "params": {**PARAMS, "cfg_scale": float("nan")}}, "params.cfg_scale"),
    ("Infinity", {**TXT, "params": {**PARAMS, "eta": float("inf")}}, "params.eta"),
    (
        "-Infinity in a LoRA weight",
        {**TXT, "params": {**PARAMS, "loras": [{"name": "x", "weight": float("-inf")}]}},
        "params.loras.0.weight",
    ),
    ("an integer past 64 bits", {**TXT, "priority": 2**64}, "priority"),
    ("a huge hires size", {**TXT, "params": {**PARAMS, "hr_resize_x": 2**62}}, "params.hr_resize_x"),
]


@pytest.mark.parametrize(("body", "field"), [pytest.param(b, f, id=n) for n, b, f in POISON])
def test_poison_values_are_422_naming_the_field_and_store_nothing(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = raw_post(client, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert stored_jobs(client) == []
    # the queue keeps working: listing, a new job, a claim, a completion
    assert client.get("/v1/jobs").status_code == 200
    assert client.post("/v1/jobs", json=TXT).status_code == 201
    run_one_job_as_worker(client)
    assert [j["state"] for j in client.get("/v1/jobs").json()["jobs"]] == ["succeeded"]


def test_malformed_bodies_are_422_never_500(client: TestClient) -> None:
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"jobs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
        (json.dumps({**TXT, "labels": {"a": deep(40)}}).encode(), "labels.a" + ".0" * 30),
        (b'{"kind": "txt2img", "params": {"prompt": "\xff\xfe caf\xe9"}}', "body"),
        (b'{"kind": "txt2img", "params": {"prompt": "\xed\xa0\x80"}}', "body"),  # a UTF-8-encoded surrogate
        (b'{"priority": ' + b"9" * 5000 + b"}", "body"),
        (b"{not json", "body"),
        (b"[]", "body"),
    ]
    for body, field in cases:
        r = raw_post(client, body)
        assert r.status_code == 422, (body[:60], r.text)
        assert r.json()["error"]["field"] == field, r.text
    assert stored_jobs(client) == []
    # a byte order mark and UTF-16 (RFC 8259 detection) are still read
    assert raw_post(client, b"\xef\xbb\xbf" + json.dumps(TXT).encode()).status_code == 201
    assert raw_post(client, json.dumps(TXT).encode("utf-16")).status_code == 201


def test_a_bad_job_in_a_batch_rejects_the_batch_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    good_img2img = {"kind": "img2img", "params": {**PARAMS, "init_images": [b64(png(color=1))]}}
    jobs: list[dict[str, Any]] = [good_img2img, TXT, TXT, {**TXT, "params": {**PARAMS, "prompt": "\ud800"}}]
    r = raw_post(client, {"jobs": jobs})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs.3.params.prompt", r.text
    broken = {"kind": "img2img", "params": {**PARAMS, "init_images": [b64(FAKE_PNG)]}}
    r = raw_post(client, {"jobs": [good_img2img, TXT, TXT, broken]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs.3.params.init_images.0", r.text
    r = raw_post(client, {"jobs": [TXT] * 999 + [{**TXT, "params": {**PARAMS, "steps": 10_000}}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "jobs.999.params.steps", r.text
    assert stored_jobs(client) == []
    assert stored_inputs(settings) == []  # job 0's good image was not written either
    assert raw_post(client, {"jobs": [good_img2img, good_img2img, TXT]}).status_code == 201
    assert len(stored_inputs(settings)) == 1  # stored once the batch passed, once per content


IMAGE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "magic bytes, garbage after",
        {"init_images": [b64(FAKE_PNG)]},
        "params.init_images.0",
        "invalid_request",
    ),
    ("a truncated PNG", {"init_images": [b64(TRUNCATED_PNG)]}, "params.init_images.0", "invalid_request"),
    (
        "a GIF",
        {"init_images": [b64(FAKE_PNG[:0] + b"GIF89a" + b"\x00" * 40)]},
        "params.init_images.0",
        "invalid_request",
    ),
    (
        "a decompression bomb mask",
        {"init_images": [b64(png())], "mask": b64(bomb_png(6000))},
        "params.mask",
        "limit_exceeded",
    ),
    (
        "over the pixel limit",
        {"init_images": [b64(png((5000, 4000)))]},
        "params.init_images.0",
        "limit_exceeded",
    ),
    (
        "17 init images",
        {"init_images": [b64(png())] * 17, "batch_size": 8},
        "params.init_images",
        "limit_exceeded",
    ),
]


@pytest.mark.parametrize(
    ("params", "field", "code"), [pytest.param(p, f, c, id=n) for n, p, f, c in IMAGE_CASES]
)
def test_native_images_are_decoded_and_checked_before_the_job_is_stored(
    client: TestClient, settings: Settings, params: dict[str, Any], field: str, code: str
) -> None:
    r = client.post("/v1/jobs", json={"kind": "img2img", "params": {**PARAMS, **params}})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["field"], r.json()["error"]["code"]) == (field, code), r.text
    assert stored_jobs(client) == []
    assert stored_inputs(settings) == []


def test_uploads_are_checked_and_a_stored_upload_meets_the_generation_limits(client: TestClient) -> None:
    for data, code in [
        (FAKE_PNG, "invalid_request"),
        (TRUNCATED_PNG, "invalid_request"),
        (bomb_png(9000), "limit_exceeded"),
    ]:
        r = client.post("/v1/inputs", content=data)
        assert r.status_code == 422 and r.json()["error"] == {
            **r.json()["error"],
            "field": "body",
            "code": code,
        }, r.text
    big = client.post("/v1/inputs", content=png((5000, 4000)))  # a photo: fine for training
    assert big.status_code == 201, big.text
    assert big.json()["content_type"] == "image/png"
    r = client.post(
        "/v1/jobs", json={"kind": "img2img", "params": {**PARAMS, "init_images": [big.json()["ref"]]}}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "params.init_images.0", r.text
    small = client.post("/v1/inputs", content=png()).json()["ref"]
    r = client.post("/v1/jobs", json={"kind": "img2img", "params": {**PARAMS, "init_images": [small]}})
    assert r.status_code == 201, r.text


def test_unbounded_fields_are_bounded(make_client: MakeClient) -> None:
    client = make_client(limits={"max_body_bytes": 4 * 1024 * 1024})
    cases: list[tuple[dict[str, Any], str]] = [
        ({**TXT, "labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
        ({**TXT, "labels": {"k" * 65: "v"}}, "labels"),
        ({**TXT, "labels": {"run": "v" * 1_000_000}}, "labels.run"),
        ({**TXT, "params": {**PARAMS, "styles": ["s"] * 100_000}}, "params.styles"),
        ({**TXT, "params": {**PARAMS, "styles": ["s" * 201]}}, "params.styles.0"),
        ({**TXT, "params": {**PARAMS, "sampler_name": "x" * 1_000_000}}, "params.sampler_name"),
        ({**TXT, "params": {**PARAMS, "scheduler": "x" * 201}}, "params.scheduler"),
        ({**TXT, "params": {**PARAMS, "hr_upscaler": "x" * 201}}, "params.hr_upscaler"),
        ({**TXT, "params": {**PARAMS, "loras": [{"name": f"l{i}"} for i in range(33)]}}, "params.loras"),
        ({**TXT, "params": {**PARAMS, "prompt": "p" * 8001}}, "params.prompt"),
        ({**TXT, "idempotency_key": "k" * 201}, "idempotency_key"),
        ({**TXT, "webhook_url": "http://example.com/" + "x" * 2000}, "webhook_url"),
    ]
    for body, field in cases:
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 422, (field, r.text[:300])
        assert r.json()["error"]["field"] == field, r.text[:300]
    r = client.post("/v1/jobs", json=TXT, headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 422 and r.json()["error"]["field"] == "idempotency-key", r.text
    assert stored_jobs(client) == []
    ok = {
        **TXT,
        "labels": {f"k{i}": "v" * 256 for i in range(32)},
        "params": {**PARAMS, "styles": ["s" * 200] * 32},
    }
    assert client.post("/v1/jobs", json=ok).status_code == 201


def test_last_event_id_that_is_not_ours_replays_from_the_start(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=TXT).json()
    run_one_job_as_worker(client)
    for value in ("9" * 5000, "99999999999999999999", "-1", "1e3", "²".encode("latin-1"), "x" * 60_000):
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value}) as resp:  # type: ignore[dict-item]
            assert resp.status_code == 200
            body = "".join(resp.iter_text())
        events = [ln.split(": ", 1)[1] for ln in body.splitlines() if ln.startswith("event: ")]
        assert events == ["queued", "started", "output", "finished"], (value, body[-300:])


def test_nul_in_path_and_query_parameters_is_422_on_every_store(
    make_client: MakeClient, database_url: str
) -> None:
    client = make_client(database_url=database_url)
    assert client.post("/v1/jobs", json={**TXT, "labels": {"run": "a"}}).status_code == 201
    r = client.get("/v1/jobs", params={"label": "run:\x00"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "label", r.text
    r = client.get("/v1/jobs/j%00x")
    assert r.status_code == 422 and r.json()["error"]["field"] == "job_id", r.text
    r = client.get("/v1/jobs", params={"cursor": "\x00"})
    assert r.status_code == 422, r.text
    assert [j["labels"] for j in client.get("/v1/jobs", params={"label": "run:a"}).json()["jobs"]] == [
        {"run": "a"}
    ]


def test_the_account_webhook_refuses_poison_text(client: TestClient) -> None:
    r = client.put(
        "/v1/account/webhook",
        content=b'{"url": "http://example.com/\\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "url", r.text
    assert client.get("/v1/account").json()["webhook_url"] is None


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_declares_the_request_bodies_read_by_hand(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    jobs = spec["paths"]["/v1/jobs"]["post"]["requestBody"]
    assert jobs["required"] is True
    shapes = jobs["content"]["application/json"]["schema"]["anyOf"]
    single, batch = shapes
    assert {"kind", "params", "labels", "priority"} <= set(single["properties"])
    assert single["additionalProperties"] is False
    params = single["properties"]["params"]["anyOf"]
    assert {"prompt", "init_images", "sampler_name"} <= set(params[0]["properties"])
    assert {"base_model", "images", "instance_prompt"} <= set(params[1]["properties"])
    assert batch["properties"]["jobs"]["items"]["properties"].keys() == single["properties"].keys()
    inputs = spec["paths"]["/v1/inputs"]["post"]["requestBody"]
    assert set(inputs["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert inputs["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}
    # every reference in the document resolves
    for ref in _refs(spec):
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    assert spec["components"]["schemas"]
