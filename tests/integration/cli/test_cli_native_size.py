"""``sdfleet submit`` and ``sdfleet train`` against a live orchestrator: without ``--size`` /
``--resolution`` they ask the server's registry for the checkpoint's native size (as the web page does),
and fall back to the server's own defaults when the registry cannot say."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdfleet.cli import app
from tests.support.live import Orchestrator, make_settings


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    server = Orchestrator(make_settings(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _register(server: Orchestrator, tmp_path: Path, name: str, **fields: Any) -> None:
    source = tmp_path / f"{name}.safetensors"
    source.write_bytes(b"weights of " + name.encode())
    body = {"name": name, "kind": "checkpoint", "arch": "sd1", "source": str(source), **fields}
    r = httpx.post(f"{server.url}/v1/models", json=body)
    assert r.status_code == 201, r.text


def _submit(server: Orchestrator, *args: str) -> dict[str, Any]:
    """Run ``sdfleet submit`` (no waiting) and return the params of the job it queued."""
    before = {j["id"] for j in httpx.get(f"{server.url}/v1/jobs").json()["jobs"]}
    result = CliRunner().invoke(app, ["submit", "a red circle", "--server", server.url, "--no-wait", *args])
    assert result.exit_code == 0, result.output
    [job] = [j for j in httpx.get(f"{server.url}/v1/jobs").json()["jobs"] if j["id"] not in before]
    params: dict[str, Any] = job["params"]
    return params


def test_submit_without_size_uses_the_checkpoints_native_size(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    _register(orchestrator, tmp_path, "demo", resolution=64)
    _register(orchestrator, tmp_path, "wide", arch="sd2")  # no size of its own: the architecture's
    default = _submit(orchestrator)  # no --model: the registry's first checkpoint, as the page takes it
    assert (default["width"], default["height"]) == (64, 64)
    named = _submit(orchestrator, "--model", "demo")
    assert (named["width"], named["height"]) == (64, 64)
    sd2 = _submit(orchestrator, "--model", "wide")
    assert (sd2["width"], sd2["height"]) == (768, 768)
    chosen = _submit(orchestrator, "--model", "demo", "--size", "96x80")
    assert (chosen["width"], chosen["height"]) == (96, 80)


def test_submit_falls_back_to_the_servers_default_size(orchestrator: Orchestrator) -> None:
    params = _submit(orchestrator)  # an empty registry: nothing to ask, the server's defaults apply
    assert (params["width"], params["height"]) == (512, 512)
    bad = CliRunner().invoke(app, ["submit", "x", "--server", orchestrator.url, "--no-wait", "--size", "big"])
    assert bad.exit_code == 2 and "--size must look like 512x512" in bad.output


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 20, 20)).save(buf, format="PNG")
    return buf.getvalue()


def test_train_without_resolution_trains_at_the_base_models_native_size(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    _register(orchestrator, tmp_path, "demo", resolution=64)
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png())
    args = ["train", str(folder), "-m", "demo", "--trigger", "zqx", "--steps", "20"]
    args += ["--server", orchestrator.url, "--no-wait"]

    def trained(*more: str) -> int:
        before = {j["id"] for j in httpx.get(f"{orchestrator.url}/v1/jobs").json()["jobs"]}
        result = CliRunner().invoke(app, [*args, "--name", f"zqx{len(before)}", *more])
        assert result.exit_code == 0, result.output
        jobs = httpx.get(f"{orchestrator.url}/v1/jobs", params={"kind": "train_lora"}).json()["jobs"]
        [job] = [j for j in jobs if j["id"] not in before]
        side: int = job["params"]["resolution"]
        return side

    assert trained() == 64
    assert trained("--resolution", "128") == 128
    unknown = CliRunner().invoke(app, [*args[:3], "nope", *args[4:], "--name", "zqx"])
    assert unknown.exit_code == 2 and "base_model" in unknown.output
