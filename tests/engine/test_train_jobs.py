"""LoRA training jobs end to end on the tiny SD 1.x model (CPU): a real orchestrator, real worker
**processes** (``python -m sdfleet worker``), checkpoints in the local blob store.

The kill test: 30 steps, a checkpoint every 10, keep 2. The orchestrator holds its answer to the second
checkpoint report (the step-20 checkpoint is recorded, the worker's training thread waits for the answer),
so the test kills the worker (SIGKILL) at a known point; after the short lease runs out a second worker
takes the job with the step-20 checkpoint and finishes it. The LoRA must be bit-identical to an
uninterrupted in-process run with the same seed (CPU, one thread: the trainer restores every RNG and the
optimizer state), only the newest 2 checkpoints are left in storage, and the LoRA works in a generation
job at once.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from sdfleet.specs.training import LoraTrainSpec
from sdfleet.testing.tiny_models import TinyModels
from sdfleet.training.data import images_from_spec
from sdfleet.training.trainer import LoraTrainer
from tests.support import wait_until
from tests.support.live import Orchestrator, make_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Gate:
    """ASGI wrapper: the answer to the ``hold``-th checkpoint report waits until :meth:`open` (the
    report itself is recorded first)."""

    def __init__(self, app: Any, hold: int) -> None:
        self.app = app
        self.hold = hold
        self.reports = 0
        self.held = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/v1/worker/jobs/") and path.endswith("/checkpoint")):
            await self.app(scope, receive, send)
            return
        self.reports += 1
        if self.reports != self.hold:
            await self.app(scope, receive, send)
            return
        messages: list[Any] = []

        async def keep(message: Any) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)  # recorded now; the answer waits
        self.held.set()
        await asyncio.to_thread(self._open.wait, 300)
        for message in messages:
            await send(message)


def pictures(folder: Path) -> list[tuple[bytes, str | None]]:
    out = []
    for index, colour in enumerate([(220, 30, 30), (30, 30, 220), (30, 180, 30)]):
        image = Image.new("RGB", (48, 40), (235, 235, 235))
        ImageDraw.Draw(image).ellipse((6 + 3 * index, 5, 38, 35), fill=colour)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((buf.getvalue(), "a zqx disc, bright" if index == 0 else None))
    return out


def spec_for(refs: list[tuple[str, str | None]]) -> dict[str, Any]:
    return {
        "name": "zqx-disc",
        "base_model": "tiny-sd1",
        "images": [{"ref": ref, "caption": caption} for ref, caption in refs],
        "instance_prompt": "a zqx disc",
        "trigger_word": "zqx",
        "resolution": 32,
        "steps": 30,
        "rank": 4,
        "learning_rate": 1e-2,
        "checkpoint_every": 10,
        "keep_checkpoints": 2,
        "seed": 7,
    }


def start_worker(url: str, name: str, tmp: Path, tiny: TinyModels) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SDFLEET_WORKER_CACHE_DIR": str(tmp / f"cache-{name}"),
        "SDFLEET_WORKER_TRAIN_DIR": str(tmp / f"train-{name}"),
        "SDFLEET_WORKER_TRAIN_THREADS": "1",
        "SDFLEET_WORKER_PREFETCH": "0",
        "SDFLEET_WORKER_CLAIM_WAIT": "1",
        "SDFLEET_WORKER_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdfleet",
            "worker",
            "--server",
            url,
            "--engine",
            "diffusers",
            "--model",
            str(tiny.sd1_file),
            "--name",
            name,
            "--price-per-hour",
            "3.6",
            "--allow-private-model-urls",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.timeout(3600)  # ~40 s on an idle 2-core machine; nice 19 next to a busy one takes ~20 min
def test_killed_training_worker_is_resumed_from_its_latest_checkpoint(
    tiny: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.support.live as live

    gates: list[Gate] = []
    real_create_app = live.create_app

    def gated(settings: Any, clock: Any = time.time) -> Any:
        gates.append(Gate(real_create_app(settings, clock=clock), hold=2))
        return gates[-1]

    monkeypatch.setattr(live, "create_app", gated)
    settings = make_settings(tmp_path, lease_seconds=3.0, heartbeat_seconds=0.3, claim_max_wait=1.0)
    orchestrator = Orchestrator(settings)
    orchestrator.start()
    workers: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        with httpx.Client(base_url=orchestrator.url, timeout=30) as api:
            r = api.post(
                "/v1/models",
                json={"name": "tiny-sd1", "kind": "checkpoint", "arch": "sd1", "source": str(tiny.sd1_file)},
            )
            assert r.status_code == 201, r.text
            files = pictures(tmp_path)
            refs = []
            for data, caption in files:  # uploaded as inputs, referenced as blob:…
                refs.append((api.post("/v1/inputs", content=data).json()["ref"], caption))
            spec = spec_for(refs)
            r = api.post("/v1/jobs", json={"kind": "train_lora", "params": spec})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]

            workers.append(start_worker(orchestrator.url, "first", tmp_path, tiny))
            gate = gates[0]
            assert gate.held.wait(1500), (tmp_path / "first.log").read_text()[-3000:]
            job = api.get(f"/v1/jobs/{job_id}").json()
            assert [c["step"] for c in job["checkpoints"]] == [10, 20]
            assert job["progress"]["step"] <= 20 and job["progress"]["loss"] is not None
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            killed_at = time.monotonic()
            gate.open()

            workers.append(start_worker(orchestrator.url, "second", tmp_path, tiny))
            done = wait_until(
                lambda: (j := api.get(f"/v1/jobs/{job_id}").json())["state"] in ("succeeded", "failed") and j,
                timeout=1500,
                what="the resumed training job",
                interval=0.2,
            )
            resumed_in = time.monotonic() - killed_at
            assert done["state"] == "succeeded", (done, (tmp_path / "second.log").read_text()[-3000:])
            assert done["interruptions"] == 1 and done["failures"] == 0
            assert done["result"]["training"]["resumed_from"] == 20
            assert done["result"]["lora"]["name"] == "zqx-disc"
            assert done["cost_usd"] > 0  # both workers' time at $3.60/h
            assert [c["step"] for c in done["checkpoints"]] == [20, 30]
            events = api.get(f"/v1/jobs/{job_id}/events", timeout=300).text
            assert events.count("event: checkpoint") == 3 and "event: requeued" in events

            # only the newest two checkpoints are left in storage
            kept = sorted(
                p.name for p in (settings.data_dir / "blobs" / "checkpoints").rglob("*.safetensors")
            )
            assert kept == ["1-00000020.safetensors", "2-00000030.safetensors"]

            # the LoRA equals an uninterrupted run's, bit for bit
            lora = api.get(f"/v1/jobs/{job_id}/outputs/0", follow_redirects=True).content
            (tmp_path / "job-lora.safetensors").write_bytes(lora)
            got = load_file(tmp_path / "job-lora.safetensors")
            folder = tmp_path / "reference-images"
            folder.mkdir()
            paths = {}
            for (ref, _), (data, _) in zip(refs, files, strict=True):
                paths[ref] = folder / f"{len(paths)}.png"
                paths[ref].write_bytes(data)
            reference = LoraTrainer(
                spec,
                tiny.sd1_file,
                images_from_spec(LoraTrainSpec.parse(spec), paths),
                tmp_path / "reference",
                device="cpu",
            ).run()
            want = load_file(reference.lora_path)
            assert sorted(got) == sorted(want)
            assert all(torch.equal(got[k], want[k]) for k in want)

            # usable at once: <lora:zqx-disc:1> changes a generation
            base = {
                "prompt": "a zqx disc",
                "seed": 3,
                "steps": 4,
                "width": 64,
                "height": 64,
                "model": "tiny-sd1",
            }
            with_lora = {**base, "prompt": "a zqx disc <lora:zqx-disc:1>"}
            r = api.post("/v1/jobs", json={"jobs": [{"params": base}, {"params": with_lora}]})
            assert r.status_code == 201, r.text
            ids = [j["id"] for j in r.json()["jobs"]]
            images = []
            for gen_id in ids:
                gen = wait_until(
                    lambda gen_id=gen_id: (
                        (j := api.get(f"/v1/jobs/{gen_id}").json())["state"] in ("succeeded", "failed") and j
                    ),
                    timeout=900,
                    what="a generation job",
                )
                assert gen["state"] == "succeeded", gen
                data = api.get(f"/v1/jobs/{gen_id}/outputs/0", follow_redirects=True).content
                images.append(Image.open(io.BytesIO(data)).convert("RGB").tobytes())
            assert images[0] != images[1]
            print(
                f"\ntraining: resumed from step 20 {resumed_in:.1f} s after the kill; "
                f"second worker {done['result']['training']['it_per_s']:.2f} it/s; "
                f"whole test {time.monotonic() - started:.1f} s"
            )
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for gate in gates:
            gate.open()
        orchestrator.stop()
