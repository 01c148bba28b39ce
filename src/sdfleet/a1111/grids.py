"""A1111's grids, drawn with PIL as A1111's ``modules/images.py`` draws them: :func:`image_grid` (images in
rows and columns, each centred in its cell), :func:`draw_grid_annotations` (labels above the columns and left
of the rows, inactive ones grey and struck through, optional margins between cells),
:func:`draw_prompt_matrix` (the prompt matrix's labels), and :func:`split_grid`/:func:`combine_grid`
(overlapping tiles and their blend back into one image). Pure: images in, images out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageColor, ImageDraw, ImageFont

__all__ = [
    "GridAnnotation",
    "GridColours",
    "Tile",
    "TileGrid",
    "TileRow",
    "combine_grid",
    "draw_grid_annotations",
    "draw_prompt_matrix",
    "grid_fits",
    "image_grid",
    "split_grid",
]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(slots=True)
class GridAnnotation:
    """One line of a grid label; an inactive one (a prompt matrix part left out) is grey and struck through."""

    text: str = ""
    is_active: bool = True
    size: tuple[int, int] = (0, 0)
    allowed_width: int = 0


@dataclass(frozen=True, slots=True)
class GridColours:
    """A1111's ``grid_background_color``, ``grid_text_active_color`` and ``grid_text_inactive_color``."""

    background: str = "#ffffff"
    active: str = "#000000"
    inactive: str = "#999999"

    def rgb(self, value: str, fallback: str) -> tuple[int, int, int]:
        """A colour setting as RGB (a setting that is not a colour falls back to A1111's default)."""
        try:
            colour = ImageColor.getrgb(value)
        except ValueError:
            colour = ImageColor.getrgb(fallback)
        return colour[0], colour[1], colour[2]


def grid_fits(sizes: Sequence[tuple[int, int]], max_pixels: float) -> bool:
    """A1111's ``check_grid_size``: the images of a grid (their sizes) hold at most ``max_pixels`` pixels
    together (A1111: ``img_max_size_mp`` megapixels)."""
    return bool(sizes) and sum(width * height for width, height in sizes) <= max_pixels


def grid_rows(count: int, batch_size: int, settings: Mapping[str, Any]) -> int:
    """The rows A1111's ``image_grid`` picks when a script names none: the ``n_rows`` setting when positive,
    the batch size at 0, else the square root of the count (rounded; with ``grid_prevent_empty_spots``
    the largest row count at most that which divides the count)."""
    n_rows = int(settings.get("n_rows", -1))
    if n_rows > 0:
        return n_rows
    if n_rows == 0:
        return max(1, batch_size)
    if settings.get("grid_prevent_empty_spots"):
        rows = max(1, math.floor(math.sqrt(count)))
        while count % rows:
            rows -= 1
        return rows
    return max(1, round(math.sqrt(count)))


def image_grid(images: Sequence[Image.Image], rows: int, colours: GridColours | None = None) -> Image.Image:
    """A1111's ``image_grid`` with the row count given: cells as large as the largest image, each image
    centred in its cell, on the grid background colour."""
    colours = colours or GridColours()
    rows = max(1, min(rows, len(images)))
    cols = math.ceil(len(images) / rows)
    width, height = map(max, zip(*(image.size for image in images), strict=False))
    background = colours.rgb(colours.background, "#ffffff")
    grid = Image.new("RGB", (cols * width, rows * height), background)
    for i, image in enumerate(images):
        w_offset = 0 if image.width == width else (width - image.width) // 2
        h_offset = 0 if image.height == height else (height - image.height) // 2
        grid.paste(image.convert("RGB"), (i % cols * width + w_offset, i // cols * height + h_offset))
    return grid


def _font(size: int) -> Font:
    return ImageFont.load_default(size=max(1, size))


def _wrap(drawing: ImageDraw.ImageDraw, text: str, font: Font, line_length: int) -> list[str]:
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if drawing.textlength(line, font=font) <= line_length:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def draw_grid_annotations(
    image: Image.Image,
    width: int,
    height: int,
    hor_texts: list[list[GridAnnotation]],
    ver_texts: list[list[GridAnnotation]],
    margin: int = 0,
    colours: GridColours | None = None,
) -> Image.Image:
    """A1111's ``draw_grid_annotations``: ``hor_texts[c]`` above column ``c``, ``ver_texts[r]`` left of row
    ``r`` (no room is taken by labels that are all empty), ``margin`` pixels between the cells."""
    colours = colours or GridColours()
    active = colours.rgb(colours.active, "#000000")
    inactive = colours.rgb(colours.inactive, "#999999")
    background = colours.rgb(colours.background, "#ffffff")
    fontsize = (width + height) // 25
    line_spacing = fontsize // 2
    font = _font(fontsize)
    pad_left = 0 if sum(len(line.text) for lines in ver_texts for line in lines) == 0 else width * 3 // 4
    cols = image.width // width
    rows = image.height // height
    if cols != len(hor_texts) or rows != len(ver_texts):
        raise ValueError(f"a {cols}×{rows} grid needs {cols} column and {rows} row labels")

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1), background))
    allowed = [width] * len(hor_texts) + [pad_left] * len(ver_texts)
    for texts, allowed_width in zip(hor_texts + ver_texts, allowed, strict=True):
        items = list(texts)
        texts.clear()
        for line in items:
            texts += [
                GridAnnotation(x, line.is_active) for x in _wrap(measure, line.text, font, allowed_width)
            ]
        for line in texts:
            box = measure.multiline_textbbox((0, 0), line.text, font=font)
            line.size = (int(box[2] - box[0]), int(box[3] - box[1]))
            line.allowed_width = allowed_width

    hor_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing for lines in hor_texts]
    ver_heights = [
        sum(line.size[1] + line_spacing for line in lines) - line_spacing * len(lines) for lines in ver_texts
    ]
    pad_top = 0 if sum(hor_heights) == 0 else max(hor_heights) + line_spacing * 2

    result = Image.new(
        "RGB",
        (image.width + pad_left + margin * (cols - 1), image.height + pad_top + margin * (rows - 1)),
        background,
    )
    for row in range(rows):
        for col in range(cols):
            cell = image.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    drawing = ImageDraw.Draw(result)

    def draw_texts(x: float, y: float, lines: list[GridAnnotation]) -> None:
        for line in lines:
            size, fnt = fontsize, font
            while drawing.textlength(line.text, font=fnt) > line.allowed_width and size > 1:
                size -= 1
                fnt = _font(size)
            colour = active if line.is_active else inactive
            drawing.multiline_text(
                (x, y + line.size[1] / 2), line.text, font=fnt, fill=colour, anchor="mm", align="center"
            )
            if not line.is_active:
                half_w, half_h = line.size[0] // 2, line.size[1] // 2
                drawing.line((x - half_w, y + half_h, x + half_w, y + half_h), fill=inactive, width=4)
            y += line.size[1] + line_spacing

    for col in range(cols):
        draw_texts(
            pad_left + (width + margin) * col + width / 2, pad_top / 2 - hor_heights[col] / 2, hor_texts[col]
        )
    for row in range(rows):
        y = pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2
        draw_texts(pad_left / 2, y, ver_texts[row])
    return result


def draw_prompt_matrix(
    image: Image.Image,
    width: int,
    height: int,
    parts: Sequence[str],
    margin: int = 0,
    colours: GridColours | None = None,
) -> Image.Image:
    """A1111's ``draw_prompt_matrix``: the first half of the optional parts label the columns, the rest the
    rows; in each label a part is active when that cell's prompt has it."""
    prompts = list(parts[1:])
    boundary = math.ceil(len(prompts) / 2)
    horizontal, vertical = prompts[:boundary], prompts[boundary:]
    hor_texts = [
        [GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(horizontal)]
        for pos in range(1 << len(horizontal))
    ]
    ver_texts = [
        [GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(vertical)]
        for pos in range(1 << len(vertical))
    ]
    return draw_grid_annotations(image, width, height, hor_texts, ver_texts, margin, colours)


@dataclass(slots=True)
class Tile:
    """One tile of a :class:`TileGrid`: its left edge, width and image."""

    x: int
    width: int
    image: Image.Image


@dataclass(slots=True)
class TileRow:
    """One row of tiles: its top edge, height and tiles."""

    y: int
    height: int
    tiles: list[Tile]


@dataclass(slots=True)
class TileGrid:
    """A1111's ``images.Grid``: an image cut into overlapping tiles (:func:`split_grid`)."""

    rows: list[TileRow]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def split_grid(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """A1111's ``split_grid``: tiles of ``tile_w`` × ``tile_h`` spread evenly over the image, neighbours
    overlapping by at least ``overlap`` pixels (the last row and column flush with the far edges)."""
    width, height = image.size
    cols = max(1, math.ceil((width - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((height - overlap) / (tile_h - overlap)))
    dx = (width - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (height - tile_h) / (rows - 1) if rows > 1 else 0
    grid = TileGrid([], tile_w, tile_h, width, height, overlap)
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= height:
            y = height - tile_h
        tiles = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= width:
                x = width - tile_w
            tiles.append(Tile(x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))))
        grid.rows.append(TileRow(y, tile_h, tiles))
    return grid


def _ramp(length: int, across: int, horizontal: bool) -> Image.Image:
    """A1111's overlap mask: 0 → 255 over ``length`` pixels (``int(i * 255 / length)``)."""
    ramp = Image.new("L", (length, 1) if horizontal else (1, length))
    ramp.putdata([int(i * 255 / length) for i in range(length)])
    return ramp.resize((length, across) if horizontal else (across, length), Image.Resampling.NEAREST)


def combine_grid(grid: TileGrid) -> Image.Image:
    """A1111's ``combine_grid``: the tiles pasted back, each overlap blended linearly into its neighbour."""
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    overlap = grid.overlap
    mask_w = _ramp(overlap, grid.tile_h, horizontal=True) if overlap else None
    mask_h = _ramp(overlap, grid.image_w, horizontal=False) if overlap else None
    for row in grid.rows:
        line = Image.new("RGB", (grid.image_w, row.height))
        for tile in row.tiles:
            image = tile.image.convert("RGB")
            if tile.x == 0 or mask_w is None:
                line.paste(image, (tile.x, 0))
                continue
            line.paste(image.crop((0, 0, overlap, row.height)), (tile.x, 0), mask=mask_w)
            line.paste(image.crop((overlap, 0, tile.width, row.height)), (tile.x + overlap, 0))
        if row.y == 0 or mask_h is None:
            combined.paste(line, (0, row.y))
            continue
        combined.paste(line.crop((0, 0, line.width, overlap)), (0, row.y), mask=mask_h)
        combined.paste(line.crop((0, overlap, line.width, row.height)), (0, row.y + overlap))
    return combined
