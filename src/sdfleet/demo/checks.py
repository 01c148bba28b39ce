"""Measurable checks of a demo picture: background colour, the object's colour, and its shape.

Only the picture is looked at (numpy, no model):

- **background**: the named colour most border pixels are nearest to;
- **object**: the pixels far from the background's actual colour (the largest blob of them);
  its **colour** is the named colour most of its inner pixels are nearest to;
- **shape**: from how full the corners of the object's bounding box are and how much of the box it
  fills — a square fills its corners, an upward triangle only its bottom ones, a circle none — which
  tolerates blurry edges and rounded corners.

On the dataset's own pictures these checks are right ≥ 99% of the time (a test holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sdfleet.demo.data import COLOURS

_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
# (top corners, bottom corners, fill of the bounding box) of each ideal shape
_TEMPLATES = {"square": (1.0, 1.0, 1.0), "circle": (0.02, 0.02, 0.785), "triangle": (0.0, 0.75, 0.5)}
_OBJECT_DISTANCE = 70.0  # RGB distance from the background that counts as "object"
_MIN_PIXELS = 12


@dataclass(frozen=True, slots=True)
class Reading:
    """What the checks saw in one picture (``None`` where nothing could be seen)."""

    background: str
    colour: str | None
    shape: str | None
    pixels: int
    centre_x: float | None


def _nearest(pixels: NDArray[np.float32]) -> NDArray[np.int64]:
    distances = ((pixels[:, None, :] - _PALETTE[None, :, :]) ** 2).sum(axis=-1)
    return np.asarray(distances.argmin(axis=-1), dtype=np.int64)


def _largest_blob(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest 4-connected component of ``mask`` (a small flood fill; pictures are 64–128 px)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if labels[y0, x0]:
            continue
        current += 1
        stack = [(int(y0), int(x0))]
        labels[y0, x0] = current
        size = 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else mask


def _shape(mask: NDArray[np.bool_]) -> str:
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[top:bottom, left:right].astype(np.float32)
    h, w = box.shape
    ch, cw = max(1, round(h * 0.18)), max(1, round(w * 0.18))
    top_fill = (box[:ch, :cw].mean() + box[:ch, -cw:].mean()) / 2
    bottom_fill = (box[-ch:, :cw].mean() + box[-ch:, -cw:].mean()) / 2
    features = np.array([top_fill, bottom_fill, box.mean()])
    return min(_TEMPLATES, key=lambda name: float(((features - np.array(_TEMPLATES[name])) ** 2).sum()))


def read_picture(image: Image.Image) -> Reading:
    """Background colour, object colour, shape and horizontal position seen in ``image``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width, _ = rgb.shape
    ring = max(1, round(min(height, width) / 32))
    border = np.concatenate(
        [
            rgb[:ring].reshape(-1, 3),
            rgb[-ring:].reshape(-1, 3),
            rgb[:, :ring].reshape(-1, 3),
            rgb[:, -ring:].reshape(-1, 3),
        ]
    )
    votes = np.bincount(_nearest(border), minlength=len(_NAMES))
    background_index = int(votes.argmax())
    border_labels = _nearest(border)
    actual_bg = np.median(border[border_labels == background_index], axis=0)
    far = np.sqrt(((rgb - actual_bg) ** 2).sum(axis=-1)) > _OBJECT_DISTANCE
    if int(far.sum()) < _MIN_PIXELS * (height * width) / 4096:
        return Reading(_NAMES[background_index], None, None, int(far.sum()), None)
    blob = _largest_blob(far)
    inner = blob.copy()  # drop the blob's edge pixels, which mix with the background
    inner[1:] &= blob[:-1]
    inner[:-1] &= blob[1:]
    inner[:, 1:] &= blob[:, :-1]
    inner[:, :-1] &= blob[:, 1:]
    core = inner if inner.sum() >= 4 else blob
    colour_votes = np.bincount(_nearest(rgb[core]), minlength=len(_NAMES))
    colour_votes[background_index] = 0  # the object is never the background's colour
    _, xs = np.nonzero(blob)
    return Reading(
        background=_NAMES[background_index],
        colour=_NAMES[int(colour_votes.argmax())],
        shape=_shape(blob),
        pixels=int(blob.sum()),
        centre_x=float(xs.mean()) / width,
    )


_STRAY_DISTANCE = 60.0  # RGB distance from every mix of background and object that counts as "stray"


def stray_pixels(image: Image.Image) -> NDArray[np.bool_]:
    """Pixels of a colour the picture has no business showing: far (in RGB) from every mix of its
    background and its object colour. A demo picture is one object on a plain background, so each
    pixel is the background, the object, or an anti-aliased blend of the two (a point on the segment
    between them); the magenta/cyan blot the autoencoder draws at objects' top-left corners is not.

    The background is the border's median colour, the object the median of the pixels far from it."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    ring = max(1, round(min(rgb.shape[:2]) / 32))
    border = np.concatenate(
        [
            rgb[:ring].reshape(-1, 3),
            rgb[-ring:].reshape(-1, 3),
            rgb[:, :ring].reshape(-1, 3),
            rgb[:, -ring:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    far = np.sqrt(((rgb - background) ** 2).sum(axis=-1)) > _OBJECT_DISTANCE
    colour = np.median(rgb[far], axis=0) if int(far.sum()) >= _MIN_PIXELS else background
    segment = colour - background
    length = max(float((segment**2).sum()), 1e-6)
    t = np.clip(((rgb - background) @ segment) / length, 0.0, 1.0)
    nearest = background + t[..., None] * segment
    stray: NDArray[np.bool_] = np.sqrt(((rgb - nearest) ** 2).sum(axis=-1)) > _STRAY_DISTANCE
    return stray
