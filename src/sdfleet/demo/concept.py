"""Teach the demo model a new concept with a LoRA and measure that it learned it.

The demo world has six colours; **orange** is not one of them. A handful of pictures of orange shapes,
captioned with a made-up trigger word ("a sks circle on a white background"), train a LoRA through the
normal trainer (:mod:`sdfleet.training`). Then the same prompts are drawn with and without
``<lora:…:1>`` and the object's colour is measured: the share of object pixels nearer orange than any
of the six known colours, and whether shape and background still follow the caption.

The base model draws an unknown word as some colour it knows — "sks" as yellow, "qzv" as black, and
"zwx" as a red-yellow blend that already counts as orange (65%) — so the trigger is one whose base
pictures are not orange, and the measure is always with and without the LoRA on the same prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdfleet.demo.checks import read_picture
from sdfleet.demo.data import COLOURS, SHAPES, Scene, random_scene, render

ORANGE = (255, 128, 0)
TRIGGER = "sks"
_KNOWN = np.array(list(COLOURS.values()), dtype=np.float32)


def orange_share(image: Image.Image) -> float:
    """Share of the picture's non-background pixels that are nearer orange than any known colour."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    background = np.median(np.concatenate([rgb[:64], rgb[-64:]]), axis=0)
    far = np.sqrt(((rgb - background) ** 2).sum(-1)) > 70
    if far.sum() < 12:
        return 0.0
    pixels = rgb[far]
    to_orange = ((pixels - np.array(ORANGE, dtype=np.float32)) ** 2).sum(-1)
    to_known = ((pixels[:, None, :] - _KNOWN[None]) ** 2).sum(-1).min(-1)
    return float((to_orange < to_known).mean())


def concept_pictures(folder: Path, count: int = 12, seed: int = 0) -> list[tuple[Path, str]]:
    """``count`` pictures of orange shapes on white, captioned with the trigger word."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str]] = []
    for i in range(count):
        base = random_scene(rng, ("red", SHAPES[i % len(SHAPES)], "white"))
        scene = Scene("orange", base.shape, base.size, "white", base.extent, base.cx, base.cy, base.tint)
        path = folder / f"concept-{i:02d}.png"
        render(scene, colours={**COLOURS, "orange": ORANGE}).save(path)
        out.append((path, f"a {TRIGGER} {scene.shape} on a white background"))
    return out


@dataclass(slots=True)
class ConceptResult:
    """Orange share and checks with and without the LoRA, over the same prompts and seeds."""

    orange_without: float
    orange_with: float
    shape_with: float
    background_with: float
    images: int
    train_seconds: float


def measure(
    draw: Any, lora_name: str, shapes: tuple[str, ...] = SHAPES, seeds: range = range(1, 7)
) -> ConceptResult:
    """``draw(prompt, seed)`` through the engine; prompts "a sks <shape> on a white background"."""
    without, with_lora, shape_ok, bg_ok, n = 0.0, 0.0, 0, 0, 0
    for shape in shapes:
        prompt = f"a {TRIGGER} {shape} on a white background"
        for seed in seeds:
            without += orange_share(draw(prompt, seed))
            picture = draw(f"{prompt} <lora:{lora_name}:1>", seed)
            with_lora += orange_share(picture)
            reading = read_picture(picture)
            shape_ok += reading.shape == shape
            bg_ok += reading.background == "white"
            n += 1
    return ConceptResult(without / n, with_lora / n, shape_ok / n, bg_ok / n, n, 0.0)
