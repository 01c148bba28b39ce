"""Shared fixtures of the engine tests: tiny offline models (built once per session) and engines on them.

Every test here is marked ``engine`` and skipped, with the reason, when torch or diffusers is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the engine tests need torch (the [engine] extra)")
pytest.importorskip("diffusers", reason="the engine tests need diffusers (the [engine] extra)")

from sdfleet.domain import GenerationSpec, JobKind  # noqa: E402
from sdfleet.engine.base import GenerationResult, StepInfo  # noqa: E402
from sdfleet.engine.sd.engine import DiffusersEngine  # noqa: E402
from sdfleet.testing.tiny_models import TinyModels  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.engine)
            # diffusers' schedulers hand torch tensors to numpy in ways numpy 2 flags on every job
            item.add_marker(pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"))
            item.add_marker(
                pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")
            )


@pytest.fixture(scope="session")
def tiny(tiny_models: TinyModels) -> TinyModels:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return tiny_models


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module (training tests: bit-exact runs, and a fair share of a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def engine(tiny: TinyModels) -> DiffusersEngine:
    """An engine whose default model is the tiny SD 1.x single file."""
    return DiffusersEngine(
        tiny.sd1_file,
        models={
            "sd1-folder": tiny.sd1_dir,
            "xl": tiny.sdxl_file,
            "inpainting": tiny.sd1_inpaint_file,
            "refiner": tiny.refiner_file,
        },
        loras=tiny.loras,
        vaes=tiny.vaes,
        upscalers={"R-ESRGAN General 4xV3": tiny.srvgg_file, "4x-UltraSharp": tiny.rrdb_file},
        embeddings=tiny.embeddings,
        device="cpu",
    )


def spec(**overrides: Any) -> GenerationSpec:
    """A small, fast spec: 32×32, 2 steps, Euler a, seed 1234."""
    values: dict[str, Any] = {
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
        "steps": 2,
        "width": 32,
        "height": 32,
        "seed": 1234,
        "sampler_name": "Euler a",
        "cfg_scale": 5.0,
    }
    values.update(overrides)
    return GenerationSpec(**values)


@pytest.fixture
def run(engine: DiffusersEngine) -> Callable[..., GenerationResult]:
    """``run(spec, kind=…, stop=…)`` → result; progress events land in ``run.steps``."""
    steps: list[StepInfo] = []

    def call(
        s: GenerationSpec, kind: JobKind = JobKind.TXT2IMG, stop: Callable[[], bool] = lambda: False
    ) -> GenerationResult:
        steps.clear()
        return engine.generate(kind, s, steps.append, stop)

    call.steps = steps  # type: ignore[attr-defined]
    return call
