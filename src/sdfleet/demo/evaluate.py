"""Evaluate a text-to-image model on the demo world: generate from held-out captions through the normal
engine and score what the pictures show with :mod:`sdfleet.demo.checks`.

``ground_truth=True`` scores the dataset's own pictures instead — the checks' own accuracy (≥ 99%).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sdfleet.demo.checks import Reading, read_picture
from sdfleet.demo.data import RESOLUTION, Scene, held_out_set, render

ATTRIBUTES = ("colour", "background", "shape")


@dataclass(slots=True)
class EvalResult:
    """Accuracy per attribute (0–1) over ``images`` pictures, and every (caption, reading) scored."""

    accuracy: dict[str, float]
    images: int
    seconds: float
    rows: list[tuple[str, Reading, Scene]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {**self.accuracy, "images": self.images, "seconds": round(self.seconds, 1)}


def score(rows: list[tuple[str, Reading, Scene]]) -> dict[str, float]:
    """Fraction of pictures whose reading matches the caption, per attribute."""
    if not rows:
        return dict.fromkeys(ATTRIBUTES, 0.0)
    hits = dict.fromkeys(ATTRIBUTES, 0)
    for _, reading, scene in rows:
        hits["colour"] += reading.colour == scene.colour
        hits["background"] += reading.background == scene.background
        hits["shape"] += reading.shape == scene.shape
    return {k: v / len(rows) for k, v in hits.items()}


def engine_drawer(
    model: Path,
    *,
    steps: int = 20,
    sampler: str = "DPM++ 2M",
    cfg_scale: float = 7.0,
    device: str | None = None,
    loras: Mapping[str, Path] | None = None,
) -> Callable[[str, int], Image.Image]:
    """``draw(prompt, seed)`` → a picture at the demo's size, through the normal diffusers engine
    (``loras``: name → file, for ``<lora:name:w>`` in prompts)."""
    from sdfleet.domain import GenerationSpec, JobKind
    from sdfleet.engine.sd.engine import DiffusersEngine

    engine = DiffusersEngine(model, device=device, loras=dict(loras or {}))

    def draw(prompt: str, seed: int) -> Image.Image:
        spec = GenerationSpec(
            prompt=prompt,
            steps=steps,
            width=RESOLUTION,
            height=RESOLUTION,
            seed=seed,
            sampler_name=sampler,
            cfg_scale=cfg_scale,
        )
        return engine.generate(JobKind.TXT2IMG, spec, lambda _s: None, lambda: False).images[0].image

    return draw


def evaluate(
    *,
    model: Path | None,
    per_combo: int = 10,
    seed: int = 0,
    steps: int = 20,
    sampler: str = "DPM++ 2M",
    cfg_scale: float = 7.0,
    ground_truth: bool = False,
    device: str | None = None,
    on_image: Callable[[int, int], None] | None = None,
    save_dir: Path | None = None,
) -> EvalResult:
    """Generate ``per_combo`` pictures of each held-out combination (or render them, ``ground_truth``)."""
    pairs = held_out_set(per_combo, seed)
    generate: Callable[[str, int], Image.Image]
    if ground_truth:
        scenes = {c: s for s, c in pairs}

        def generate(caption: str, _seed: int) -> Image.Image:
            return render(scenes[caption])
    else:
        if model is None:
            raise ValueError("evaluate needs a model unless ground_truth")
        generate = engine_drawer(model, steps=steps, sampler=sampler, cfg_scale=cfg_scale, device=device)

    started = time.monotonic()
    rows: list[tuple[str, Reading, Scene]] = []
    for i, (scene, caption) in enumerate(pairs):
        image = generate(caption, seed * 100_000 + i)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            image.save(save_dir / f"{i:04d}-{caption.replace(' ', '_')}.png")
        rows.append((caption, read_picture(image), scene))
        if on_image is not None:
            on_image(i + 1, len(pairs))
    return EvalResult(score(rows), len(rows), time.monotonic() - started, rows)
