"""A1111's "Poor man's outpainting" (``scripts/poor_mans_outpainting.py``) as a batch of ordinary inpainting
jobs: the init image pasted on a larger canvas (grown by "Pixels to expand" on the chosen sides, rounded up to
a multiple of 64), the canvas cut into overlapping tiles of the request's size (:func:`~sdfleet.a1111.grids.
split_grid`), one inpainting job per tile that touches the new border — with A1111's mask: white outside the
original image, black over it less twice the mask blur — and the results blended back
(:func:`~sdfleet.a1111.grids.combine_grid`). The tiles do not depend on each other, so they run in parallel.
Pure: images in, the plan out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from sdfleet.a1111.grids import Tile, TileGrid, split_grid
from sdfleet.a1111.script_args import ArgSpec, arg_error

__all__ = ["DIRECTIONS", "OutpaintPlan", "plan_poor_mans_outpainting", "poor_mans_arg_specs"]

DIRECTIONS = ("left", "right", "up", "down")
FILLS = ("fill", "original", "latent noise", "latent nothing")


def poor_mans_arg_specs(_: bool) -> tuple[ArgSpec, ...]:
    """``ui()``'s components: pixels to expand, mask blur, masked content (an index), directions."""
    return (
        ArgSpec("Pixels to expand", 128, "int", minimum=8, maximum=256, step=8),
        ArgSpec("Mask blur", 4, "int", minimum=0, maximum=64, step=1),
        ArgSpec("Masked content", FILLS[0], "index", choices=FILLS),
        ArgSpec("Outpainting direction", DIRECTIONS, "multi", choices=DIRECTIONS),
    )


@dataclass(slots=True)
class OutpaintPlan:
    """The canvas's tiles, which of them are inpainted (``work``: (row, column) in order) with which masks,
    and the inpainting fields every job takes."""

    grid: TileGrid
    work: list[tuple[int, int]]
    masks: list[Image.Image]
    mask_blur: int
    inpainting_fill: int

    def tile(self, index: int) -> Tile:
        """The canvas tile of work item ``index``."""
        row, col = self.work[index]
        return self.grid.rows[row].tiles[col]


def plan_poor_mans_outpainting(
    init: Image.Image, width: int, height: int, args: Sequence[Any], *, max_jobs: int
) -> OutpaintPlan:
    """A1111's ``run`` up to the jobs: canvas, masks, tiles of ``width`` × ``height`` (the request's size)
    overlapping by the expansion, and the tiles that touch the new border."""
    pixels, mask_blur, fill, directions = int(args[0]), int(args[1]), int(args[2]), list(args[3])
    if pixels >= min(width, height):
        raise arg_error(
            0, f"Pixels to expand ({pixels}) must be less than the width and height ({width}×{height})"
        )
    left = pixels if "left" in directions else 0
    right = pixels if "right" in directions else 0
    up = pixels if "up" in directions else 0
    down = pixels if "down" in directions else 0
    target_w = math.ceil((init.width + left + right) / 64) * 64
    target_h = math.ceil((init.height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - init.width) // (left + right)
    if right > 0:
        right = target_w - init.width - left
    if up > 0:
        up = up * (target_h - init.height) // (up + down)
    if down > 0:
        down = target_h - init.height - up

    canvas = Image.new("RGB", (target_w, target_h))
    canvas.paste(init.convert("RGB"), (left, up))
    mask = Image.new("L", canvas.size, "white")
    ImageDraw.Draw(mask).rectangle(
        (
            left + (mask_blur * 2 if left > 0 else 0),
            up + (mask_blur * 2 if up > 0 else 0),
            mask.width - right - (mask_blur * 2 if right > 0 else 0),
            mask.height - down - (mask_blur * 2 if down > 0 else 0),
        ),
        fill="black",
    )
    grid = split_grid(canvas, width, height, pixels)
    grid_mask = split_grid(mask, width, height, pixels)
    work: list[tuple[int, int]] = []
    masks: list[Image.Image] = []
    for r, (row, mask_row) in enumerate(zip(grid.rows, grid_mask.rows, strict=True)):
        for c, (tile, mask_tile) in enumerate(zip(row.tiles, mask_row.tiles, strict=True)):
            inside = (
                tile.x >= left
                and tile.x + tile.width <= canvas.width - right
                and row.y >= up
                and row.y + row.height <= canvas.height - down
            )
            if not inside:
                work.append((r, c))
                masks.append(mask_tile.image)
    if len(work) > max_jobs:
        raise arg_error(0, f"outpainting needs {len(work)} tiles, the limit is {max_jobs}")
    return OutpaintPlan(grid=grid, work=work, masks=masks, mask_blur=mask_blur * 2, inpainting_fill=fill)
