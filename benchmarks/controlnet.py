"""ControlNet in the engine's own loop: seconds per step with 0, 1 and 2 units, and what the loop saves.

All cases run the tiny SD 1.x model and the tiny SD 1.x ControlNet (built offline, see
:mod:`sdfleet.testing.tiny_models`; the net is a copy of the UNet's encoder, as real ControlNets are, so its
cost relative to the UNet is of the same order as SD 1.5's), the same prompt, seed, sampler (Euler), steps,
size and CFG scale, warm, one image at a time, on this machine's device. Cases alternate (A, B, C, …, A, B,
…) so machine noise hits them alike; the figure is the minimum over ``--repeats`` (the stable one on a
shared machine), with the median beside it.

- **0 units**, **1 unit** and **2 units** (Balanced, window 0–1): the net on every step — what a pipeline
  that always runs the net costs;
- **window 0–0.5**: one unit steering the first half of the steps only. A pipeline that runs the net at
  scale 0 outside the window pays the full "1 unit" cost; ours does not run it there;
- **ControlNet is more important**: the net on the conditional rows only (half the batch under CFG).

The ratios put each saving against running the net on every step: ``window saving`` is the share of the
net's cost (1 unit − 0 units) that the window removes, ``mode 2 saving`` the share that the half batch
removes. The net's forward calls are counted in each case, so the table also shows that the window and the
half batch do what they say.

    python benchmarks/controlnet.py --steps 20 --size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.controlnet.loader import load_controlnet
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.testing.tiny_models import build_tiny_models

NET = "tiny-controlnet-sd1"


def _control_image(folder: Path, size: int) -> str:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).ellipse(
        (size // 5, size // 5, 4 * size // 5, 4 * size // 5), outline="white", width=2
    )
    path = folder / "edges.png"
    image.save(path)
    return str(path)


def _cases(image: str) -> dict[str, list[dict[str, Any]]]:
    unit = {"model": NET, "image": image}
    return {
        "0 units": [],
        "1 unit": [unit],
        "2 units": [unit, {**unit, "weight": 0.5}],
        "1 unit, window 0–0.5": [{**unit, "guidance_end": 0.5}],
        "1 unit, ControlNet is more important": [{**unit, "control_mode": "ControlNet is more important"}],
    }


def _counter(engine: DiffusersEngine, path: Path) -> list[int]:
    """A list that grows by the batch size of every forward pass of the net at ``path``."""
    net = engine.controlnets.pool.get(path, str(engine.device), lambda p, d: load_controlnet(p, device=d))
    rows: list[int] = []
    net.module.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models", type=Path, default=None, help="reuse tiny models built here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    root = args.models or Path(tempfile.mkdtemp(prefix="sdfleet-bench-"))
    if not (root / "tiny-sd1.safetensors").exists():
        build_tiny_models(root)
    net_path = root / "controlnet" / f"{NET}.safetensors"
    engine = DiffusersEngine(root / "tiny-sd1.safetensors", controlnets={NET: net_path}, device=device)
    image = _control_image(root, args.size)
    cases = _cases(image)

    def run(units: list[dict[str, Any]]) -> float:
        spec = GenerationSpec(
            prompt="a photo of a cat",
            negative_prompt="blurry",
            steps=args.steps,
            width=args.size,
            height=args.size,
            cfg_scale=args.cfg,
            sampler_name="Euler",
            seed=1,
            controlnet=units,
        )
        started = time.perf_counter()
        engine.generate(JobKind.TXT2IMG, spec, lambda _s: None, lambda: False)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / args.steps

    for units in cases.values():  # warm: the model, the net, the kernels
        run(units)
    rows = _counter(engine, net_path)
    calls: dict[str, tuple[int, int]] = {}
    for name, units in cases.items():
        rows.clear()
        run(units)
        calls[name] = (len(rows), sum(rows))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, units in cases.items():
            times[name].append(run(units))

    best = {name: min(t) for name, t in times.items()}
    table = Table(
        title=f"ControlNet per step — tiny SD 1.x, {args.size}², {args.steps} steps, CFG {args.cfg}, {device}"
    )
    for column in ("case", "s/step (min)", "s/step (median)", "vs 0 units", "net calls", "net rows"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name in cases:
        table.add_row(
            name,
            f"{best[name]:.4f}",
            f"{statistics.median(times[name]):.4f}",
            f"{best[name] / best['0 units']:.2f}×",
            str(calls[name][0]),
            str(calls[name][1]),
        )
    console = Console()
    console.print(table)
    net_cost = best["1 unit"] - best["0 units"]

    def saving(name: str) -> str:
        return f"{(best['1 unit'] - best[name]) / net_cost:.0%}" if net_cost > 0 else "–"

    report: list[tuple[str, Callable[[], str]]] = [
        ("one unit costs", lambda: f"{net_cost / best['0 units']:.0%} on top of the UNet"),
        ("two units cost", lambda: f"{(best['2 units'] - best['0 units']) / best['0 units']:.0%}"),
        ("window 0–0.5 saves", lambda: f"{saving('1 unit, window 0–0.5')} of the net's cost (ideal 50%)"),
        ("mode 2's half batch saves", lambda: f"{saving('1 unit, ControlNet is more important')} of it"),
    ]
    for label, value in report:
        console.print(f"{label:>26}: {value()}")


if __name__ == "__main__":
    main()
