"""Many A1111 clients at once: requests run in parallel across workers, each with its own checkpoint —
where A1111 would serialise them behind one lock and switch the global model back and forth."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.base import GenerationResult, OnStep, ShouldStop
from sdfleet.engine.fake import FakeEngine
from tests.integration.a1111.conftest import checkpoint_body, decode_png, title_of
from tests.support.live import WorkerPool

LOAD_SECONDS = 1.0
STEPS = 10
STEP_SECONDS = 0.01
ROUND = LOAD_SECONDS + STEPS * STEP_SECONDS  # one job on a worker that has to load its checkpoint


class TimedEngine(FakeEngine):
    """The FakeEngine, recording when each generation ran and with which checkpoint."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[tuple[float, float, str | None]] = []
        self._runs_lock = threading.Lock()

    def generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult:
        started = time.monotonic()
        try:
            return super().generate(kind, spec, on_step, should_stop)
        finally:
            with self._runs_lock:
                self.runs.append((started, time.monotonic(), spec.model))


async def test_eight_requests_with_different_checkpoints_on_four_workers_take_two_rounds(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool, tmp_path: Path
) -> None:
    names = [f"model-{i}" for i in range(8)]
    for name in names:
        assert (await admin.post("/v1/models", json=checkpoint_body(tmp_path, name))).status_code == 201
    # one request first, on a worker of its own, so that what is measured below is a warm server
    warm_up = WorkerPool(workers.server_url, workers.token)
    await warm_up.start(FakeEngine(step_seconds=0.0))
    warm = await api.post(
        "/sdapi/v1/txt2img", json={"prompt": "warm up", "steps": 1, "width": 64, "height": 64}
    )
    assert warm.status_code == 200, warm.text
    await warm_up.stop()

    engines = [
        TimedEngine(step_seconds=STEP_SECONDS, load_seconds=LOAD_SECONDS, cache_size=1) for _ in range(4)
    ]
    for engine in engines:
        await workers.start(engine, heartbeat_seconds=0.5)

    async def one(name: str, seed: int) -> dict[str, object]:
        response = await api.post(
            "/sdapi/v1/txt2img",
            json={
                "prompt": f"a portrait painted by {name}",
                "steps": STEPS,
                "width": 128,
                "height": 128,
                "seed": seed,
                "sampler_name": "DPM++ 2M Karras",
                "override_settings": {"sd_model_checkpoint": title_of(name)},
            },
        )
        assert response.status_code == 200, response.text
        answer: dict[str, object] = response.json()
        return answer

    started = time.monotonic()
    answers = await asyncio.gather(*(one(name, seed) for seed, name in enumerate(names)))
    elapsed = time.monotonic() - started

    # two rounds: every worker ran two jobs, one after the other, and the first round ran on all four at
    # once. (When each worker starts its second job depends on when its first one was completed and on
    # the scheduler of a loaded machine, so the second round is bounded by the total time below instead.)
    assert [len(e.runs) for e in engines] == [2, 2, 2, 2]
    first = [e.runs[0] for e in engines]
    assert max(start for start, _, _ in first) < min(end for _, end, _ in first), "round 1"
    for engine in engines:
        (_, first_end, _), (second_start, _, _) = engine.runs
        assert second_start >= first_end
    # every job loaded its own checkpoint (no worker switched a shared model back and forth)
    assert sorted(model for e in engines for _, _, model in e.runs) == names
    # behind A1111's single lock the eight would take 8 × ROUND; here two rounds plus the queue's overhead
    # (about 0.6 s on an idle machine; more on a loaded one, so the bound leaves room)
    assert elapsed < 4 * ROUND, f"{elapsed:.2f}s for 8 requests on 4 workers (one round is {ROUND:.2f}s)"
    for seed, (name, answer) in enumerate(zip(names, answers, strict=True)):
        info = json.loads(str(answer["info"]))
        assert info["sd_model_name"] == name
        assert info["sd_model_hash"] == title_of(name)[-11:-1]
        assert info["all_seeds"] == [seed]
        images = answer["images"]
        assert isinstance(images, list)
        assert f"Model: {name}" in decode_png(images[0]).info["parameters"]
