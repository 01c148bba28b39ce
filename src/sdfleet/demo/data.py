"""The demo model's world: procedural pictures of one shape in a named colour on a plain background.

Everything is deterministic from a seed. A :class:`Scene` is what a caption says (colour, shape, size,
background) plus where the object sits; :func:`render` draws it anti-aliased (drawn 4× larger, then
reduced); :func:`caption` says it in plain English, e.g. "a small red circle on a yellow background".

Twelve (colour, shape, background) combinations are never shown in training (:data:`HELD_OUT`), so the
evaluation can ask for pictures the model has never seen, built only from words it has.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 36, 36),
    "green": (36, 168, 60),
    "blue": (40, 80, 224),
    "yellow": (244, 212, 36),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, tuple[int, int]] = {"small": (20, 28), "large": (34, 46)}  # extent in px at 64×64
RESOLUTION = 64
_SUPERSAMPLE = 4
_JITTER = 10  # ± per channel, so "red" is a range of reds, not one value


@dataclass(frozen=True, slots=True)
class Scene:
    """One picture: a ``colour`` ``shape`` of ``extent`` px centred at (``cx``, ``cy``) on ``background``."""

    colour: str
    shape: str
    size: str
    background: str
    extent: int
    cx: float
    cy: float
    tint: tuple[int, int, int] = (0, 0, 0)
    bg_tint: tuple[int, int, int] = (0, 0, 0)

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.background)


def _all_combos() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in COLOURS if b != c]


def _held_out() -> frozenset[tuple[str, str, str]]:
    """12 of the 90 combinations, chosen so every colour, shape and background still appears in training."""
    combos = _all_combos()
    rng = random.Random(1234)
    rng.shuffle(combos)
    chosen: list[tuple[str, str, str]] = []
    used_pairs: set[tuple[str, str]] = set()
    for combo in combos:
        colour, shape, background = combo
        # never hold out two combos sharing a (colour, shape) or (colour, background) pair
        if (colour, shape) in used_pairs or (colour, "bg:" + background) in used_pairs:
            continue
        chosen.append(combo)
        used_pairs |= {(colour, shape), (colour, "bg:" + background)}
        if len(chosen) == 12:
            break
    return frozenset(chosen)


HELD_OUT = _held_out()
TRAIN_COMBOS = tuple(c for c in _all_combos() if c not in HELD_OUT)


def random_scene(rng: random.Random, combo: tuple[str, str, str] | None = None) -> Scene:
    """A scene with random placement; ``combo`` fixes (colour, shape, background), else a training one."""
    colour, shape, background = combo or rng.choice(TRAIN_COMBOS)
    size = rng.choice(tuple(SIZES))
    low, high = SIZES[size]
    extent = rng.randint(low, high)
    margin = extent / 2 + 3
    cx = rng.uniform(margin, RESOLUTION - margin)
    cy = rng.uniform(margin, RESOLUTION - margin)

    def tint() -> tuple[int, int, int]:
        return (
            rng.randint(-_JITTER, _JITTER),
            rng.randint(-_JITTER, _JITTER),
            rng.randint(-_JITTER, _JITTER),
        )

    return Scene(colour, shape, size, background, extent, cx, cy, tint(), tint())


def _rgb(
    name: str, tint: tuple[int, int, int], colours: dict[str, tuple[int, int, int]] = COLOURS
) -> tuple[int, int, int]:
    base = colours[name]
    return (
        max(0, min(255, base[0] + tint[0])),
        max(0, min(255, base[1] + tint[1])),
        max(0, min(255, base[2] + tint[2])),
    )


def shape_polygon(shape: str, cx: float, cy: float, extent: float) -> list[tuple[float, float]] | None:
    """The outline of a square or an upward triangle (None for a circle), in pixel coordinates."""
    half = extent / 2
    if shape == "square":
        return [
            (cx - half, cy - half),
            (cx + half, cy - half),
            (cx + half, cy + half),
            (cx - half, cy + half),
        ]
    if shape == "triangle":
        return [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    return None


def render(
    scene: Scene, resolution: int = RESOLUTION, colours: dict[str, tuple[int, int, int]] = COLOURS
) -> Image.Image:
    """Draw the scene, anti-aliased, as an RGB image of ``resolution`` px (``colours``: name → RGB)."""
    big = resolution * _SUPERSAMPLE
    scale = big / RESOLUTION
    image = Image.new("RGB", (big, big), _rgb(scene.background, scene.bg_tint, colours))
    draw = ImageDraw.Draw(image)
    fill = _rgb(scene.colour, scene.tint, colours)
    cx, cy, extent = scene.cx * scale, scene.cy * scale, scene.extent * scale
    polygon = shape_polygon(scene.shape, cx, cy, extent)
    if polygon is None:
        draw.ellipse((cx - extent / 2, cy - extent / 2, cx + extent / 2, cy + extent / 2), fill=fill)
    else:
        draw.polygon(polygon, fill=fill)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


CAPTION_STYLES = 7


def caption(scene: Scene, style: int = 0) -> str:
    """Plain English for the scene, in one of :data:`CAPTION_STYLES` styles.

    0: everything ("a small red circle on a yellow background"); 1: no size; 2: no background; 3: no
    colour ("a small circle on a yellow background"); 4: colour and shape ("a red circle"); 5: the
    object's colour alone ("red"); 6: the background alone ("a yellow background").
    """
    if style == 1:
        return f"a {scene.colour} {scene.shape} on a {scene.background} background"
    if style == 2:
        return f"a {scene.size} {scene.colour} {scene.shape}"
    if style == 3:
        return f"a {scene.size} {scene.shape} on a {scene.background} background"
    if style == 4:
        return f"a {scene.colour} {scene.shape}"
    if style == 5:
        return scene.colour
    if style == 6:
        return f"a {scene.background} background"
    return f"a {scene.size} {scene.colour} {scene.shape} on a {scene.background} background"


# how often each caption style is used in training: mostly complete captions, and enough partial ones
# that the text encoder learns each word's role on its own (so "red" as a negative prompt means the
# object's colour, and a prompt without a colour still draws a clean object)
_STYLE_WEIGHTS = (0.55, 0.15, 0.08, 0.06, 0.06, 0.05, 0.05)


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption in a random style (see :data:`_STYLE_WEIGHTS`)."""
    return caption(scene, rng.choices(range(CAPTION_STYLES), weights=_STYLE_WEIGHTS)[0])


def training_set(count: int, seed: int) -> Iterator[tuple[Scene, str]]:
    """``count`` (scene, caption) pairs of training combinations, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        scene = random_scene(rng)
        yield scene, training_caption(scene, rng)


def held_out_set(per_combo: int, seed: int) -> list[tuple[Scene, str]]:
    """``per_combo`` scenes of every held-out combination with their full captions (evaluation)."""
    rng = random.Random(seed)
    out: list[tuple[Scene, str]] = []
    for combo in sorted(HELD_OUT):
        for _ in range(per_combo):
            scene = random_scene(rng, combo)
            out.append((scene, caption(scene)))
    return out
