"""An SD upscale job (A1111's "SD upscale" script): the picture made bigger by an upscaler, cut into
overlapping tiles of the generation's size, each tile redrawn by img2img, the tiles blended back into one
picture. It is a parent job: its stages run as child jobs on as many workers as are free
(:mod:`sdfleet.jobs.fanout`).

The grid follows A1111's ``images.split_grid``/``combine_grid``: as many tiles as cover the picture with at
least ``overlap`` px shared between neighbours, spread evenly, blended over the shared strip with linear
weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sdfleet.domain import GenerationSpec

MAX_TILES = 256


class SdUpscaleSpec(BaseModel):
    """The picture, the upscaler and factor, the tiles' overlap, and the img2img settings each tile is
    redrawn with (its ``width``/``height`` is the tile size, as in A1111)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="The picture: base64 / data: URL, or a blob: reference of a stored input")
    generation: GenerationSpec = Field(
        description="img2img settings of every tile; width × height = tile size"
    )
    upscaler: str = Field(default="Lanczos", min_length=1, max_length=200)
    scale: float = Field(default=2.0, ge=1.0, le=8.0)
    overlap: int = Field(default=64, ge=0, le=512)
    # filled in at submit by the job system
    input_width: int = Field(default=0, ge=0, description="Set by the server: the picture's width")
    input_height: int = Field(default=0, ge=0, description="Set by the server: the picture's height")
    needs_gpu: bool = Field(default=False, description="Set by the server: the upscaler is GPU-class")
    arch: str | None = Field(default=None, description="Set by the server: the checkpoint's architecture")

    @field_validator("image", "upscaler")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    def upscaled_size(self) -> tuple[int, int]:
        """The upscaler's result: the picture × ``scale``, each side floored to ÷8 (A1111's upscalers)."""
        return (
            max(8, int(self.input_width * self.scale) // 8 * 8),
            max(8, int(self.input_height * self.scale) // 8 * 8),
        )

    def tile_size(self) -> tuple[int, int]:
        """The tiles' size: the generation's, no larger than the upscaled picture (÷8)."""
        width, height = self.upscaled_size()
        return (min(self.generation.width, width) // 8 * 8, min(self.generation.height, height) // 8 * 8)

    def grid(self) -> Grid:
        """Where the tiles go on the upscaled picture."""
        return Grid.cover(self.upscaled_size(), self.tile_size(), self.overlap)


@dataclass(frozen=True, slots=True)
class Grid:
    """Tiles of ``tile`` px covering a picture of ``size`` px: their top-left corners, row by row."""

    size: tuple[int, int]
    tile: tuple[int, int]
    overlap: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @classmethod
    def cover(cls, size: tuple[int, int], tile: tuple[int, int], overlap: int) -> Grid:
        """A1111's layout: ``ceil((side − overlap) / (tile − overlap))`` tiles per side, spread evenly."""
        overlap = max(0, min(overlap, min(tile) // 2))

        def starts(side: int, span: int) -> tuple[int, ...]:
            if side <= span:
                return (0,)
            count = math.ceil((side - overlap) / (span - overlap))
            step = (side - span) / (count - 1)
            return tuple(min(int(i * step), side - span) for i in range(count))

        return cls(size, tile, overlap, starts(size[0], tile[0]), starts(size[1], tile[1]))

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Each tile's box ``(left, top, right, bottom)``, row by row."""
        return [(x, y, x + self.tile[0], y + self.tile[1]) for y in self.ys for x in self.xs]

    def split(self, picture: Image.Image) -> list[Image.Image]:
        """The tiles of ``picture`` (which has :attr:`size`)."""
        return [picture.crop(box) for box in self.boxes]

    def combine(self, tiles: list[Image.Image]) -> Image.Image:
        """The tiles blended back into one picture: linear weights over every strip two tiles share."""
        width, height = self.size
        total = np.zeros((height, width, 3), np.float32)
        weight = np.zeros((height, width, 1), np.float32)
        masks: dict[tuple[bool, bool, bool, bool], np.ndarray] = {}  # by which edges are shared
        for (left, top, right, bottom), tile in zip(self.boxes, tiles, strict=True):
            if tile.size != self.tile:
                tile = tile.resize(self.tile)
            pixels = np.asarray(tile.convert("RGB"), np.float32)
            edges = (top > 0, bottom < height, left > 0, right < width)
            mask = masks.get(edges)
            if mask is None:
                wy = _ramp(self.tile[1], self.overlap, edges[0], edges[1])
                wx = _ramp(self.tile[0], self.overlap, edges[2], edges[3])
                mask = masks[edges] = np.outer(wy, wx).astype(np.float32)[:, :, None]
            pixels *= mask
            total[top:bottom, left:right] += pixels
            weight[top:bottom, left:right] += mask
        np.maximum(weight, 1e-9, out=weight)
        total /= weight
        np.rint(total, out=total)
        return Image.fromarray(np.clip(total, 0, 255).astype(np.uint8), "RGB")


def _ramp(length: int, overlap: int, lead: bool, trail: bool) -> np.ndarray:
    weights = np.ones(length)
    if overlap <= 0:
        return weights
    ramp = (np.arange(min(overlap, length)) + 0.5) / overlap
    if lead:
        weights[: ramp.size] = np.minimum(weights[: ramp.size], ramp)
    if trail:
        weights[-ramp.size :] = np.minimum(weights[-ramp.size :], ramp[::-1])
    return weights


__all__ = ["MAX_TILES", "Grid", "SdUpscaleSpec"]
