"""``sdfleet bench`` end to end: a real orchestrator process (started by the bench itself, or given
with ``--server``), simulated workers speaking the real worker protocol over HTTP, and a report
whose numbers add up."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
import typer
from typer.testing import CliRunner

from sdfleet.bench.cli import register
from sdfleet.bench.load import BenchConfig, PromptTemplate, job_bodies, parse_size, run_bench
from sdfleet.bench.report import Distribution, EmbeddedServer, parse_metrics, percentile

pytestmark = pytest.mark.timeout(120)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """sdfleet (test shell)."""

    register(app)
    return app


def _ordered(dist: dict[str, Any]) -> None:
    assert dist["p50"] <= dist["p95"] <= dist["p99"] <= dist["max"]
    assert dist["p50"] >= 0


# ===================================================================== pure parts


def test_prompt_template_walks_every_combination_then_cycles() -> None:
    t = PromptTemplate.parse("a {color} {shape}", ["color=red,green", "shape=circle,square,star"])
    assert t.combinations == 6
    prompts = t.take(8)
    assert len(set(prompts[:6])) == 6
    assert prompts[6:] == prompts[:2]
    assert "a red circle" in prompts and "a green star" in prompts


def test_prompt_template_refuses_mismatches() -> None:
    with pytest.raises(ValueError, match="no --var shape"):
        PromptTemplate.parse("a {shape}", [])
    with pytest.raises(ValueError, match="not used"):
        PromptTemplate.parse("a cat", ["color=red"])
    with pytest.raises(ValueError, match="name=value"):
        PromptTemplate.parse("a {color}", ["color"])
    assert PromptTemplate.parse("{{literal}} {x}", ["x=1"]).take(1) == ["{literal} 1"]


def test_sizes_percentiles_metrics_and_bodies() -> None:
    assert parse_size("512x768") == (512, 768)
    assert parse_size("1024") == (1024, 1024)
    with pytest.raises(ValueError, match="512x512"):
        parse_size("big")
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    d = Distribution.of([5.0, 1.0, 3.0])
    assert d is not None and d.p50 == 3.0 and d.max == 5.0 and d.count == 3
    assert Distribution.of([]) is None
    samples = parse_metrics('# HELP x\nprocess_cpu_seconds_total 12.5\nfoo{a="b"} 1\nbar_total 3\n')
    assert samples == {"process_cpu_seconds_total": 12.5, "bar_total": 3.0}
    cfg = BenchConfig(jobs=3, prompt=PromptTemplate.parse("{n}", ["n=a,b"]), simulate_workers=1, steps=7)
    bodies = job_bodies(cfg, "run1")
    assert [b["params"]["prompt"] for b in bodies] == ["a", "b", "a"]
    assert bodies[2]["params"]["seed"] == 2 and bodies[2]["params"]["steps"] == 7
    assert len({b["idempotency_key"] for b in bodies}) == 3


def test_config_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="runs no workers"):
        BenchConfig(engine="attached").check()
    with pytest.raises(ValueError, match="--simulate-workers"):
        BenchConfig(engine="fake", simulate_workers=0).check()


def test_cli_without_workers_on_an_embedded_server_says_why() -> None:
    result = CliRunner().invoke(_app(), ["bench", "--jobs", "5", "--no-progress"])
    assert result.exit_code == 2
    assert "runs no workers" in result.output


# ===================================================================== real runs


@pytest.mark.slow
def test_bench_cli_embedded_server_json() -> None:
    """200 jobs, 20 simulated workers, no engine time, against a server the bench starts."""
    args = [
        "bench",
        "--jobs",
        "200",
        "--simulate-workers",
        "20",
        "--engine-seconds",
        "0",
        "--claim-batch",
        "4",
        "--prompt",
        "a {color} {shape}",
        "--var",
        "color=red,green,blue",
        "--var",
        "shape=circle,square",
        "--json",
        "--no-progress",
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["jobs"] == report["succeeded"] == 200
    assert report["failed"] == report["canceled"] == report["unfinished"] == 0
    assert report["images"] == 200
    assert report["setup"]["embedded"] is True
    assert report["setup"]["variables"] == {"color": ["red", "green", "blue"], "shape": ["circle", "square"]}
    _ordered(report["queue_wait"])
    _ordered(report["latency"])
    assert report["latency"]["p50"] >= report["queue_wait"]["p50"]
    assert report["jobs_per_second"] == pytest.approx(200 / report["elapsed_seconds"])
    cpu = report["server_cpu"]
    assert cpu["source"].startswith("/proc/")
    assert cpu["lifecycles"] == 200 and cpu["cpu_seconds"] > 0
    assert cpu["ms_per_lifecycle"] == pytest.approx(1000 * cpu["cpu_seconds"] / 200)
    assert report["requests"]["submit"] == 1
    assert report["requests"]["claim"] >= 200 / 4 and report["requests"]["complete"] >= 1
    assert report["retries"] == report["attempt_failures"] + report["interruptions"]
    assert report["cost_usd"] == 0 and report["images_per_dollar"] is None  # no engine time, no cost


@pytest.mark.slow
async def test_bench_against_a_running_server_adds_up() -> None:
    """``--server URL``: CPU from the server's /metrics; cost and duty cycle from real engine time."""
    async with aiohttp.ClientSession() as session:
        server = EmbeddedServer()
        await server.start(session)
        try:
            report = await run_bench(
                BenchConfig(
                    jobs=120,
                    prompt=PromptTemplate.parse("a {animal}", ["animal=cat,dog,owl"]),
                    server=server.url,
                    simulate_workers=6,
                    claim_batch=8,
                    engine_seconds=0.01,
                    price_per_hour=3.6,
                    steps=5,
                    width=256,
                    height=256,
                    upload="put",
                )
            )
        finally:
            await server.stop()
    assert report.ok, report.errors
    assert report.jobs == report.succeeded == report.images == 120
    assert report.queue_wait is not None and report.latency is not None
    assert report.queue_wait.p50 <= report.queue_wait.p95 <= report.queue_wait.p99
    assert report.latency.p50 <= report.latency.p95 <= report.latency.p99
    # 0.01 s of engine at $3.60/h is $0.00001 per image
    assert report.cost_usd == pytest.approx(120 * 0.00001)
    assert report.cost_per_image is not None
    assert report.cost_per_image == pytest.approx(report.cost_usd / report.images)
    assert report.cost_per_image == pytest.approx(0.00001)
    assert report.images_per_dollar == pytest.approx(1 / report.cost_per_image)
    assert report.duty_cycle is not None and len(report.duty_cycle.workers) == 6
    assert sum(w.jobs for w in report.duty_cycle.workers) == 120
    assert sum(w.busy_seconds for w in report.duty_cycle.workers) == pytest.approx(120 * 0.01)
    assert 0 < report.duty_cycle.min <= report.duty_cycle.mean <= report.duty_cycle.max <= 1
    assert report.server_cpu is not None and report.server_cpu.source.startswith("/metrics")
    assert report.server_cpu.lifecycles == 120
    assert report.requests["upload"] == 120  # --upload put: one PUT per output
    data = json.loads(report.to_json())
    assert data["cost_per_image"] == pytest.approx(report.cost_per_image)
    assert data["server_cpu"]["ms_per_lifecycle"] == pytest.approx(report.server_cpu.ms_per_lifecycle)
