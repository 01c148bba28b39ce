"""Engine overhead: ``DiffusersEngine.generate`` against a bare diffusers pipeline call, same work.

Both run the same tiny SD 1.x model (built offline, see :mod:`sdfleet.testing.tiny_models`), the same
scheduler (Euler, uniform timesteps), steps, size, CFG scale and prompt, warm, one image at a time on
the CPU. The bare call is ``StableDiffusionPipeline(prompt=…, negative_prompt=…, generator=…)`` — it
tokenises and encodes the prompts, runs the loop and decodes, like the engine. The engine additionally
parses the A1111 prompt, resolves the sampler, draws per-image noise, writes the infotext and reports
progress (with ``--preview-every`` previews). Runs alternate (engine, bare, engine, …) so machine noise
hits both alike; the report gives per-image wall and process-CPU times (median and minimum; on a shared
machine the CPU time and the minimum are the stable figures) and the overhead in percent (target ≤ 5 %).

    python benchmarks/engine_overhead.py --images 20 --steps 20 --size 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.testing.tiny_models import build_tiny_models


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20, help="timed images per side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--preview-every", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models", type=Path, default=None, help="reuse tiny models built here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = args.models or Path(tempfile.mkdtemp(prefix="sdfleet-bench-"))
    tiny = build_tiny_models(root) if not (root / "tiny-sd1").exists() else None
    folder = root / "tiny-sd1"
    del tiny

    prompt, negative = "a photo of a cat, best quality", "blurry, lowres"
    engine = DiffusersEngine(folder, device="cpu", hash_sidecars=False)
    spec = GenerationSpec(
        prompt=prompt,
        negative_prompt=negative,
        steps=args.steps,
        width=args.size,
        height=args.size,
        cfg_scale=args.cfg,
        sampler_name="Euler",
        seed=1,
        preview_every=args.preview_every,
    )

    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    model = engine.store.get(folder)
    pipe: Any = StableDiffusionPipeline(**model.pipe.components)  # the very same modules
    pipe.scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)

    def ours(seed: int) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        engine.generate(
            JobKind.TXT2IMG, spec.model_copy(update={"seed": seed}), lambda s: None, lambda: False
        )
        return time.perf_counter() - started, time.process_time() - cpu

    def bare(seed: int) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            pipe(
                prompt=prompt,
                negative_prompt=negative,
                num_inference_steps=args.steps,
                guidance_scale=args.cfg,
                height=args.size,
                width=args.size,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pil",
            )
        return time.perf_counter() - started, time.process_time() - cpu

    for i in range(args.warmup):
        ours(i)
        bare(i)
    engine_runs: list[tuple[float, float]] = []
    bare_runs: list[tuple[float, float]] = []
    for i in range(args.images):
        engine_runs.append(ours(100 + i))
        bare_runs.append(bare(100 + i))
    print(
        f"tiny SD 1.x, {args.size}x{args.size}, {args.steps} steps Euler, CFG {args.cfg:g}, "
        f"{args.images} images each (warm, interleaved), torch threads {torch.get_num_threads()}"
    )
    print(f"{'ms per image':24} {'wall median':>12} {'wall min':>10} {'CPU median':>11} {'CPU min':>9}")
    rows = {"bare diffusers pipeline": _stats(bare_runs), "sdfleet DiffusersEngine": _stats(engine_runs)}
    for label, values in rows.items():
        print(
            f"{label:24} "
            + " ".join(f"{v * 1000:>{w}.1f}" for v, w in zip(values, (12, 10, 11, 9), strict=True))
        )
    base, ours_ = rows["bare diffusers pipeline"], rows["sdfleet DiffusersEngine"]
    print(
        f"{'overhead %':24} "
        + " ".join(
            f"{100 * (o - b) / b:>+{w}.2f}" for o, b, w in zip(ours_, base, (12, 10, 11, 9), strict=True)
        )
    )


def _stats(runs: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    wall = [w for w, _ in runs]
    cpu = [c for _, c in runs]
    return statistics.median(wall), min(wall), statistics.median(cpu), min(cpu)


if __name__ == "__main__":
    main()
