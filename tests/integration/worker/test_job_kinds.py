"""The worker's job-kind seam against a real orchestrator: a kind is whatever factory the
``Worker(kinds=…)`` registry names, its run sees only the :class:`RunContext`, and the worker
offers the orchestrator only the kinds it can run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sdfleet.config import WorkerSettings
from sdfleet.engine.fake import FakeEngine
from sdfleet.worker.client import Backoff, WorkerClient
from sdfleet.worker.context import Finish, RunContext
from sdfleet.worker.generation import GenerationRun
from sdfleet.worker.held import HeldJob
from sdfleet.worker.kinds import default_kinds
from sdfleet.worker.runner import Worker
from tests.support.live import Orchestrator, make_settings, wait_until


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    orch = Orchestrator(make_settings(tmp_path))
    orch.start()
    try:
        yield orch
    finally:
        orch.stop()


@pytest.fixture
async def api(orchestrator: Orchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=orchestrator.url, timeout=10) as client:
        yield client


def make_worker(orchestrator: Orchestrator, kinds: dict[str, type[GenerationRun]] | None) -> Worker:
    settings = WorkerSettings(server=orchestrator.url, name="kinds-worker", engine="fake", claim_wait=1.0)
    client = WorkerClient(settings.server, settings.token, backoff=Backoff(base=0.05, cap=0.3))
    registry = None if kinds is None else {**default_kinds(), **kinds}
    return Worker(settings, FakeEngine(step_seconds=0.005), client=client, kinds=registry)


seen: list[tuple[str, str]] = []


class RecordingRun(GenerationRun):
    """A kind registered in place of generation: records what the seam handed it."""

    def __init__(self, ctx: RunContext, job: HeldJob) -> None:
        super().__init__(ctx, job)
        seen.append((job.id, ctx.worker_id))

    async def execute(self) -> Finish | None:
        return await super().execute()


async def test_the_registered_kind_runs_each_job_with_the_run_context(
    orchestrator: Orchestrator, api: httpx.AsyncClient
) -> None:
    seen.clear()
    worker = make_worker(orchestrator, {"txt2img": RecordingRun})
    task = asyncio.create_task(worker.run())
    try:
        ids = []
        for seed in (1, 2):
            response = await api.post(
                "/v1/jobs", json={"params": {"prompt": "a fox", "seed": seed, "steps": 2}}
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])

        async def done() -> bool:
            states = [(await api.get(f"/v1/jobs/{i}")).json()["state"] for i in ids]
            return all(s == "succeeded" for s in states)

        await wait_until(done, what="both jobs to succeed")
        assert sorted(seen) == sorted((i, worker.worker_id) for i in ids)
        assert worker.stats.jobs_completed == 2
    finally:
        await worker.stop()
        await task
        await worker.client.aclose()


async def test_a_kind_missing_from_the_registry_is_not_offered(
    orchestrator: Orchestrator, api: httpx.AsyncClient
) -> None:
    worker = make_worker(orchestrator, None)
    worker.kinds.pop("img2img")
    task = asyncio.create_task(worker.run())
    try:

        async def registered() -> bool:
            return worker.worker_id is not None

        await wait_until(registered, what="the worker to register")
        response = await api.get("/v1/admin/workers")
        assert response.status_code == 200, response.text
        (view,) = response.json()["workers"]
        # annotate offers itself (model-free modules; no feature of the modules with weights on a generator)
        assert view["capabilities"]["kinds"] == ["txt2img", "upscale", "annotate"]
        assert "annotate_depth" not in view["capabilities"]["features"]
    finally:
        await worker.stop()
        await task
        await worker.client.aclose()
