"""LoRA training throughput on the CPU, and what checkpointing costs.

Trains a LoRA with :class:`sdfleet.training.trainer.LoraTrainer` on the tiny SD 1.x model (built
offline, see :mod:`sdfleet.testing.tiny_models`) and, when it exists, on the shipped demo model
(``src/sdfleet/demo/weights/sdfleet-demo.safetensors``, 64 px). Each model is trained with
``checkpoint_every=0`` (none) and ``checkpoint_every=10``, the two alternating ``--repeats`` times so
machine noise hits both alike. Reported per run: training steps/s (the step loop only, timed from the
first to the last progress callback, so model loading and latent caching are excluded), the time of
one checkpoint (write of the complete state file) and its size, and the overhead of checkpointing
every 10 steps in percent of the loop time (median over the repeats), by wall time and by process CPU
time (on a shared machine the CPU time is the stable figure).

    nice -n 19 python benchmarks/train_lora.py --steps 60 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from sdfleet.testing.tiny_models import build_tiny_models
from sdfleet.training.data import TrainingImage
from sdfleet.training.trainer import LoraTrainer

DEMO = (
    Path(__file__).resolve().parent.parent
    / "src"
    / "sdfleet"
    / "demo"
    / "weights"
    / "sdfleet-demo.safetensors"
)


@dataclass
class Timing:
    steps_per_s: float
    loop_seconds: float
    loop_cpu_seconds: float
    checkpoint_seconds: list[float]
    checkpoint_bytes: int


def pictures(folder: Path, count: int, size: int) -> list[TrainingImage]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index in range(count):
        image = Image.new("RGB", (size, size), (20, 20, 30))
        r = size // 4
        ImageDraw.Draw(image).regular_polygon((size // 2, size // 2, r + index % 3), 5, fill=(250, 200, 20))
        path = folder / f"img-{index}.png"
        image.save(path)
        out.append(TrainingImage(path))
    return out


def train_once(
    model: Path,
    images: list[TrainingImage],
    work: Path,
    args: argparse.Namespace,
    every: int,
    resolution: int,
) -> Timing:
    spec: dict[str, Any] = {
        "name": "bench",
        "base_model": model.stem,
        "images": [{"ref": p.path.name} for p in images],
        "instance_prompt": "a photo of zqx star",
        "resolution": resolution,
        "steps": args.steps,
        "rank": args.rank,
        "batch_size": args.batch_size,
        "learning_rate": 1e-4,
        "train_text_encoder": args.train_text_encoder,
        "checkpoint_every": every,
        "keep_checkpoints": 2,
        "seed": 1,
    }
    marks: dict[int, float] = {}
    cpu_marks: dict[int, float] = {}
    saves: list[float] = []
    sizes: list[int] = []
    before_save: list[float] = []

    def on_progress(step: int, total: int, loss: float, it_per_s: float, eta: float) -> None:
        marks[step] = time.perf_counter()
        cpu_marks[step] = time.process_time()
        before_save[:] = [marks[step]]

    def on_checkpoint(step: int, path: Path) -> None:
        saves.append(time.perf_counter() - before_save[0])
        sizes.append(path.stat().st_size)

    trainer = LoraTrainer(spec, model, images, work, device="cpu")
    trainer.run(on_progress=on_progress, on_checkpoint=on_checkpoint)
    loop = marks[args.steps] - marks[1]
    cpu = cpu_marks[args.steps] - cpu_marks[1]
    return Timing((args.steps - 1) / loop, loop, cpu, saves, max(sizes, default=0))


def bench(label: str, model: Path, resolution: int, args: argparse.Namespace, root: Path) -> None:
    images = pictures(root / f"pictures-{resolution}", args.images, resolution)
    runs: dict[int, list[Timing]] = {0: [], 10: []}
    train_once(
        model, images, root / "warmup", argparse.Namespace(**{**vars(args), "steps": 5}), 0, resolution
    )
    for repeat in range(args.repeats):
        for every in (0, 10):
            runs[every].append(
                train_once(model, images, root / f"{label}-{every}-{repeat}", args, every, resolution)
            )
    none, ten = runs[0], runs[10]
    none_loop = statistics.median(t.loop_seconds for t in none)
    ten_loop = statistics.median(t.loop_seconds for t in ten)
    none_cpu = statistics.median(t.loop_cpu_seconds for t in none)
    ten_cpu = statistics.median(t.loop_cpu_seconds for t in ten)
    ckpt = [s for t in ten for s in t.checkpoint_seconds]
    print(
        f"\n{label} ({resolution}x{resolution}, rank {args.rank}, batch {args.batch_size}, "
        f"text encoder {'on' if args.train_text_encoder else 'off'}, {args.steps} steps, {args.repeats} repeats)"
    )
    print(
        f"  steps/s, no checkpoints      : median {statistics.median(t.steps_per_s for t in none):.2f}"
        f"  (runs: {', '.join(f'{t.steps_per_s:.2f}' for t in none)})"
    )
    print(
        f"  steps/s, checkpoint every 10 : median {statistics.median(t.steps_per_s for t in ten):.2f}"
        f"  (runs: {', '.join(f'{t.steps_per_s:.2f}' for t in ten)})"
    )
    print(
        f"  process CPU per step         : none {1000 * none_cpu / (args.steps - 1):.1f} ms, every 10 "
        f"{1000 * ten_cpu / (args.steps - 1):.1f} ms ({100 * (ten_cpu - none_cpu) / none_cpu:+.1f} %)"
    )
    print(
        f"  one checkpoint               : median {statistics.median(ckpt) * 1000:.1f} ms, "
        f"{ten[0].checkpoint_bytes / 1024:.0f} KiB"
    )
    print(
        f"  overhead of checkpoint_every=10: {100 * (ten_loop - none_loop) / none_loop:+.1f} % of the loop time "
        f"(by checkpoint time alone: {100 * statistics.median(ckpt) / 10 / (none_loop / (args.steps - 1)):.1f} %)"
    )


def demo_architecture(root: Path) -> Path:
    """An untrained model of the demo's architecture (its configs in :mod:`sdfleet.demo.train`), saved
    like the demo checkpoint: throughput does not depend on the weights."""
    from sdfleet.demo import train as demo
    from sdfleet.testing.tiny_models import tokenizer

    torch.manual_seed(0)
    pipe = demo.assemble(
        demo.AutoencoderKL(**demo.VAE_CONFIG),
        demo.UNet2DConditionModel(**demo.UNET_CONFIG),
        demo.CLIPTextModel(demo.CLIPTextConfig(**demo.TEXT_CONFIG)),
        tokenizer(root / "demo-tokenizer"),
    )
    return Path(demo.save_checkpoint(pipe, root / "demo-architecture.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=64, help="tiny model resolution")
    parser.add_argument("--train-text-encoder", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models", type=Path, default=None, help="reuse tiny models built here")
    parser.add_argument("--demo", type=Path, default=DEMO, help="the demo checkpoint (skipped when missing)")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument(
        "--demo-architecture",
        action="store_true",
        help="without the trained demo checkpoint, time an untrained model of the same architecture",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    root = Path(tempfile.mkdtemp(prefix="sdfleet-bench-train-"))
    if not args.skip_tiny:
        models_dir = args.models or root / "tiny"
        if not (models_dir / "tiny-sd1.safetensors").exists():
            build_tiny_models(models_dir)
        bench("tiny SD 1.x", models_dir / "tiny-sd1.safetensors", args.resolution, args, root)
    if args.demo.is_file():
        bench("demo model", args.demo, 64, args, root)
    elif args.demo_architecture:
        print(f"\ndemo model: {args.demo} does not exist yet; an untrained one of its architecture instead")
        bench("demo architecture (untrained)", demo_architecture(root), 64, args, root)
    else:
        print(f"\ndemo model: {args.demo} does not exist yet, skipped (--demo-architecture: time its shapes)")


if __name__ == "__main__":
    main()
