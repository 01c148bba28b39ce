"""A contact sheet: a few prompts, a few seeds each, generated through the engine and labelled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DEFAULT_PROMPTS = (
    "a large red circle on a white background",
    "a small blue square on a yellow background",
    "a large yellow triangle on a black background",
    "a green circle on a blue background",
    "a white square on a red background",
    "a black triangle on a green background",
)


def contact_sheet(
    draw_image: Callable[[str, int], Image.Image],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    seeds: Sequence[int] = (1, 2, 3, 4),
    *,
    cell: int = 128,
    on_image: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """One row per prompt (its text on the left), one column per seed."""
    font = ImageFont.load_default(size=15)
    label_width = 360
    gap = 6
    sheet = Image.new(
        "RGB",
        (label_width + len(seeds) * (cell + gap) + gap, len(prompts) * (cell + gap) + gap + 24),
        (250, 250, 248),
    )
    pen = ImageDraw.Draw(sheet)
    for j, seed in enumerate(seeds):
        pen.text((label_width + gap + j * (cell + gap), 4), f"seed {seed}", fill=(90, 90, 90), font=font)
    done, total = 0, len(prompts) * len(seeds)
    for i, prompt in enumerate(prompts):
        top = 24 + gap + i * (cell + gap)
        pen.text((10, top + cell // 2 - 9), prompt, fill=(20, 20, 20), font=font)
        for j, seed in enumerate(seeds):
            image = draw_image(prompt, seed).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(image, (label_width + gap + j * (cell + gap), top))
            done += 1
            if on_image is not None:
                on_image(done, total)
    return sheet


def save_sheet(sheet: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
