"""The scheduling simulation of issue #6: cache-aware claims against first come, first served.

8 workers, 4 checkpoints × 40 LoRAs = 160 combinations with Zipf popularity, 2,000 jobs arriving
at random (Poisson). The real :class:`JobService` and SQL claim run on SQLite; time is a
:class:`FakeClock` moved from event to event (arrivals, job ends, aging deadlines), so nothing
sleeps. Each simulated worker holds one checkpoint and a few LoRAs in memory and a bounded LRU disk
cache; a job costs its run time plus a load for every model not in memory (longer when it must be
downloaded first). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import heapq
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sdfleet.config import Settings
from sdfleet.domain import Capabilities, Feature, GenerationSpec, JobKind, LoraRef
from sdfleet.jobs.service import JobService
from sdfleet.jobs.types import Completion, JobRequest, Registration
from sdfleet.store import SqlStore
from sdfleet.store.migrate import upgrade
from tests.support.clock import FakeClock

WORKERS, CHECKPOINTS, LORAS = 8, 4, 40
JOBS = int(os.environ.get("SIM_JOBS", "2000"))
ZIPF_S = 1.4  # popularity of the 160 combinations: rank k is drawn ∝ 1/k^s
ARRIVALS_PER_SECOND = 1.5
LORA_SLOTS, DISK_CHECKPOINTS, DISK_LORAS = 8, 2, 24
RUN, CKPT_FROM_DISK, CKPT_DOWNLOAD, LORA_FROM_DISK, LORA_DOWNLOAD = 2.0, 4.0, 10.0, 0.5, 1.5
BOUND = 30.0  # affinity_max_wait_seconds
LONGEST_JOB = RUN + CKPT_DOWNLOAD + LORA_DOWNLOAD


@dataclass
class SimWorker:
    id: str
    checkpoint: str | None = None
    loras: OrderedDict[str, None] = field(default_factory=OrderedDict)  # in memory, LRU
    disk: OrderedDict[str, None] = field(default_factory=OrderedDict)  # checkpoints on disk
    disk_loras: OrderedDict[str, None] = field(default_factory=OrderedDict)
    job: tuple[str, int] | None = None  # (job id, epoch) while busy

    def warm(self) -> tuple[list[str], list[str]]:
        loaded = ([self.checkpoint] if self.checkpoint else []) + [f"lora:{n}" for n in self.loras]
        return loaded, [*self.disk, *self.disk_loras]

    def run(self, checkpoint: str, lora: str) -> tuple[float, int, int]:
        """Load what is missing, LRU-evict; return (seconds, loads, downloads)."""
        seconds, loads, downloads = RUN, 0, 0
        if self.checkpoint != checkpoint:
            loads += 1
            downloads += checkpoint not in self.disk
            seconds += CKPT_FROM_DISK if checkpoint in self.disk else CKPT_DOWNLOAD
            self.checkpoint = checkpoint
        _touch(self.disk, checkpoint, DISK_CHECKPOINTS)
        if lora not in self.loras:
            loads += 1
            downloads += lora not in self.disk_loras
            seconds += LORA_FROM_DISK if lora in self.disk_loras else LORA_DOWNLOAD
        _touch(self.loras, lora, LORA_SLOTS)
        _touch(self.disk_loras, lora, DISK_LORAS)
        return seconds, loads, downloads


def _touch(lru: OrderedDict[str, None], name: str, size: int) -> None:
    lru[name] = None
    lru.move_to_end(name)
    while len(lru) > size:
        lru.popitem(last=False)


@dataclass
class Outcome:
    loads: int = 0
    downloads: int = 0
    max_wait: float = 0.0
    waits: list[float] = field(default_factory=list)
    busy: float = 0.0
    makespan: float = 0.0

    @property
    def loads_per_1000(self) -> float:
        return 1000 * self.loads / JOBS

    @property
    def throughput(self) -> float:
        """Jobs per simulated second, first arrival → last job done."""
        return JOBS / self.makespan

    @property
    def capacity(self) -> float:
        """Jobs per second the 8 workers sustain at this mean job time (busy time only)."""
        return WORKERS * JOBS / self.busy


async def simulate(tmp: Path, *, affinity: bool, seed: int = 7) -> Outcome:
    rng = random.Random(seed)
    combos = [(f"ckpt-{c}", f"lora-{x}") for c in range(CHECKPOINTS) for x in range(LORAS)]
    rng.shuffle(combos)
    weights = [1 / (k + 1) ** ZIPF_S for k in range(len(combos))]
    start = 1_800_000_000.0
    t, arrivals = start, []
    for _ in range(JOBS):
        t += rng.expovariate(ARRIVALS_PER_SECOND)
        arrivals.append((t, rng.choices(combos, weights)[0]))

    clock = FakeClock(start)
    settings = Settings(
        data_dir=tmp / "data",
        lease_seconds=1e6,  # no heartbeats in the simulation
        affinity_enabled=affinity,
        affinity_max_wait_seconds=BOUND,
    )
    store = SqlStore("sqlite://")  # in memory: the simulation needs no durability
    await upgrade(store)
    service = JobService(store, settings, clock=clock)
    workers = []
    for i in range(WORKERS):
        info = await service.register_worker(
            "sim", Registration(name=f"w{i}", capabilities=Capabilities(features=Feature.LORA))
        )
        workers.append(SimWorker(info.id))
    out = Outcome()
    ends: list[tuple[float, int]] = []  # (time, worker index) of running jobs
    queued: dict[str, float] = {}  # job id → submit time, of jobs not yet handed out
    next_arrival, done = 0, 0

    async def try_claim(candidates: list[int], *, until_one: bool) -> None:
        """Idle workers claim, in random order (a long poll woken by new work, or a worker that
        just finished); ``until_one``: stop at the first that gets a job."""
        rng.shuffle(candidates)
        for i in candidates:
            w = workers[i]
            if not queued or w.job is not None:
                continue
            loaded, cached = w.warm()
            result = await service.claim(w.id, None, loaded_models=loaded, cached_models=cached)
            for job in result.jobs:
                waited = clock.now - queued.pop(job.id)
                out.waits.append(waited)
                out.max_wait = max(out.max_wait, waited)
                seconds, loads, downloads = w.run(job.spec["model"], job.spec["loras"][0]["name"])
                out.loads += loads
                out.downloads += downloads
                out.busy += seconds
                w.job = (job.id, job.lease_epoch)
                heapq.heappush(ends, (clock.now + seconds, i))
            if result.jobs and until_one:
                return

    try:
        while done < JOBS:
            candidates = [ends[0][0]] if ends else []
            if next_arrival < JOBS:
                candidates.append(arrivals[next_arrival][0])
            deadlines = [q + BOUND for q in queued.values() if q + BOUND > clock.now]
            if deadlines and any(w.job is None for w in workers):
                candidates.append(min(deadlines))  # a held-back job ages: an idle worker takes it
            clock.now = max(clock.now, min(candidates))
            news = False  # new work, or a held-back job that just aged: wake the idle workers
            while next_arrival < JOBS and arrivals[next_arrival][0] <= clock.now:
                model, lora = arrivals[next_arrival][1]
                spec = GenerationSpec(
                    prompt=f"job {next_arrival}", width=64, height=64, model=model, loras=[LoraRef(name=lora)]
                )
                [sub] = await service.submit("sim", [JobRequest(kind=JobKind.TXT2IMG, spec=spec)])
                queued[sub.job.id] = clock.now
                next_arrival += 1
                news = True
            news = news or any(abs(q + BOUND - clock.now) < 1e-9 for q in queued.values())
            freed = []
            while ends and ends[0][0] <= clock.now:
                _, i = heapq.heappop(ends)
                job_id, epoch = workers[i].job or ("", 0)
                workers[i].job = None
                [res] = await service.complete(workers[i].id, None, [Completion(job_id, epoch, outputs=[])])
                assert res.status == "accepted"
                done += 1
                out.makespan = clock.now - start
                freed.append(i)
            await try_claim(freed, until_one=False)  # a worker that finished asks for more at once
            if news:
                await try_claim([i for i, w in enumerate(workers) if w.job is None], until_one=True)
    finally:
        await store.close()
    return out


@pytest.mark.timeout(300)
async def test_affinity_cuts_model_loads_and_keeps_waits_bounded(tmp_path: Path) -> None:
    fcfs = await simulate(tmp_path, affinity=False)
    warm = await simulate(tmp_path, affinity=True)
    for name, o in (("first come, first served", fcfs), ("cache-aware (affinity)", warm)):
        waits = sorted(o.waits)
        print(
            f"\n{name}: {o.loads_per_1000:.0f} model loads per 1,000 jobs ({1000 * o.downloads / JOBS:.0f} "
            f"downloads); wait p50 {waits[len(waits) // 2]:.1f} s, p99 {waits[int(len(waits) * 0.99)]:.1f} s, "
            f"max {o.max_wait:.1f} s; throughput {o.throughput:.2f} jobs/s (arrivals "
            f"{ARRIVALS_PER_SECOND}/s), capacity {o.capacity:.2f} jobs/s"
        )
    print(f"loads: {fcfs.loads_per_1000 / warm.loads_per_1000:.1f}× fewer with affinity")
    assert fcfs.loads_per_1000 >= 5 * warm.loads_per_1000
    assert warm.max_wait <= BOUND + LONGEST_JOB
