"""``sdfleet demo …``: build the dataset, train the demo model, evaluate a model on held-out captions.

Importing this module loads no torch; the commands import the trainer and the engine when they run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sdfleet.demo.model import DEMO_CHECKPOINT

console = Console(stderr=True)
demo_app = typer.Typer(
    help="The built-in demo model: its procedural dataset, training on CPU, and evaluation.",
    no_args_is_help=True,
)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@demo_app.command("dataset")
def dataset(
    out: Annotated[Path, typer.Argument(help="Folder to write PNGs and captions.jsonl into.")],
    count: Annotated[int, typer.Option(help="How many pictures.")] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, same pictures.")] = 0,
) -> None:
    """Write pictures of the training set (and their captions) to look at."""
    from sdfleet.demo.data import render, training_set

    out.mkdir(parents=True, exist_ok=True)
    with (out / "captions.jsonl").open("w") as fh:
        for i, (scene, caption) in enumerate(training_set(count, seed)):
            name = f"{i:05d}.png"
            render(scene).save(out / name)
            fh.write(json.dumps({"file": name, "caption": caption}) + "\n")
    console.print(f"{count} pictures in {out}")


@demo_app.command("train")
def train(
    out: Annotated[Path, typer.Option(help="Where to write the checkpoint.")] = Path(
        "sdfleet-demo.safetensors"
    ),
    work: Annotated[Path, typer.Option(help="Snapshots and the run's record.")] = Path("demo-run"),
    seed: Annotated[int, typer.Option(help="Everything follows from it.")] = 0,
    vae_steps: Annotated[int, typer.Option(help="Autoencoder steps.")] = 1200,
    unet_steps: Annotated[int, typer.Option(help="UNet + text-encoder steps.")] = 3600,
    images: Annotated[int, typer.Option(help="Training pictures (encoded once).")] = 24_000,
    snapshot_every: Annotated[
        int, typer.Option(help="Write a snapshot every N UNet steps (0: never).")
    ] = 600,
    ema_decay: Annotated[float, typer.Option(help="EMA of the weights (0: ship the raw weights).")] = 0.999,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores).")] = None,
    vae_from: Annotated[
        Path | None,
        typer.Option(help="Take the autoencoder from this checkpoint (e.g. a snapshot) and skip stage 1."),
    ] = None,
) -> None:
    """Train the demo model on CPU (about 1 h 25 min on 2 quiet cores with the defaults)."""
    from sdfleet.demo.train import TrainConfig
    from sdfleet.demo.train import train as run

    config = TrainConfig(
        seed=seed,
        images=images,
        vae_steps=vae_steps,
        vae_batch=12,
        unet_steps=unet_steps,
        snapshot_every=snapshot_every,
        ema_decay=ema_decay,
        threads=threads,
        vae_from=str(vae_from) if vae_from else None,
    )
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=step, info=f"loss {loss:.4f}" if loss else "")
            if not console.is_terminal and (step % 100 == 0 or step == total):
                # a run in the background (output to a file) gets a plain line now and then instead
                console.print(f"{stage} {step}/{total}" + (f" loss {loss:.4f}" if loss else ""))

        path = run(config, out, work, progress)
    record = json.loads((work / "run.json").read_text())
    console.print(f"wrote [bold]{path}[/] in {record['timings']['total_seconds'] / 60:.1f} min")


@demo_app.command("refit-vae")
def refit_vae(
    checkpoint: Annotated[Path, typer.Option(help="The demo checkpoint whose denoiser is kept.")] = Path(
        "sdfleet-demo.safetensors"
    ),
    out: Annotated[Path, typer.Option(help="Where to write the checkpoint with the new autoencoder.")] = Path(
        "sdfleet-demo-refit.safetensors"
    ),
    seed: Annotated[int, typer.Option(help="Everything follows from it.")] = 0,
    steps: Annotated[int, typer.Option(help="Autoencoder steps.")] = 1200,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores).")] = None,
) -> None:
    """Give a trained demo model the current autoencoder architecture, fitted to its latent space, keeping
    its denoiser and text encoder (about 20 min on one core; see sdfleet.demo.refit)."""
    from sdfleet.demo.refit import refit_vae as run
    from sdfleet.demo.refit import swap_vae
    from sdfleet.demo.train import TrainConfig, reconstruction_accuracy

    config = TrainConfig(seed=seed, vae_steps=steps, vae_batch=12, threads=threads)
    with _progress() as bar:
        task = bar.add_task("autoencoder", total=steps, info="")

        def progress(stage: str, step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, info=f"loss {loss:.4f}")
            if not console.is_terminal and (step % 100 == 0 or step == total):
                console.print(f"{stage} {step}/{total} loss {loss:.4f}")

        vae = run(checkpoint, config, progress)
    console.print(f"reconstruction (held-out pictures read right): {reconstruction_accuracy(vae)}")
    swap_vae(checkpoint, vae, out)
    console.print(f"wrote {out}")


@demo_app.command("eval")
def evaluate(
    model: Annotated[
        Path | None, typer.Option(help="Checkpoint to evaluate (default: the shipped demo model).")
    ] = None,
    per_combo: Annotated[int, typer.Option(help="Pictures per held-out combination (12 of them).")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    steps: Annotated[int, typer.Option()] = 20,
    sampler: Annotated[str, typer.Option()] = "DPM++ 2M",
    cfg_scale: Annotated[float, typer.Option()] = 7.0,
    ground_truth: Annotated[
        bool, typer.Option("--ground-truth", help="Score the dataset's own pictures (checks the checks).")
    ] = False,
    save: Annotated[Path | None, typer.Option(help="Also save every picture here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object of accuracies.")] = False,
) -> None:
    """Generate from held-out captions through the normal engine and score colour, background, shape."""
    from sdfleet.demo.evaluate import ATTRIBUTES
    from sdfleet.demo.evaluate import evaluate as run

    logging.getLogger("sdfleet").setLevel(logging.WARNING)
    with _progress() as bar:
        task = bar.add_task("generating", total=per_combo * 12, info="")
        result = run(
            model=model or DEMO_CHECKPOINT,
            per_combo=per_combo,
            seed=seed,
            steps=steps,
            sampler=sampler,
            cfg_scale=cfg_scale,
            ground_truth=ground_truth,
            save_dir=save,
            on_image=lambda done, total: bar.update(task, completed=done),
        )
    if as_json:
        print(json.dumps(result.as_json()))
        return
    table = Table(title=f"{result.images} pictures of held-out captions ({result.seconds:.0f} s)")
    table.add_column("attribute")
    table.add_column("accuracy", justify="right")
    for name in ATTRIBUTES:
        table.add_row(name, f"{result.accuracy[name]:.1%}")
    Console().print(table)


@demo_app.command("sheet")
def sheet(
    out: Annotated[Path, typer.Argument(help="PNG to write.")] = Path("demo-sheet.png"),
    model: Annotated[Path | None, typer.Option(help="Checkpoint (default: the shipped demo model).")] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="A row (repeat); default: six demo captions.")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Columns: seeds 1..N.")] = 4,
    steps: Annotated[int, typer.Option()] = 20,
) -> None:
    """Draw a labelled contact sheet: prompts down, seeds across."""
    from sdfleet.demo.evaluate import engine_drawer
    from sdfleet.demo.sheet import DEFAULT_PROMPTS, contact_sheet, save_sheet

    logging.getLogger("sdfleet").setLevel(logging.WARNING)
    draw = engine_drawer(model or DEMO_CHECKPOINT, steps=steps)
    prompts = prompt or list(DEFAULT_PROMPTS)
    with _progress() as bar:
        task = bar.add_task("drawing", total=len(prompts) * seeds, info="")
        image = contact_sheet(
            draw, prompts, range(1, seeds + 1), on_image=lambda done, _t: bar.update(task, completed=done)
        )
    console.print(f"wrote {save_sheet(image, out)}")
