"""Training data: local images with captions, their preprocessing, and a reproducible order.

The order of the samples is a pure function of ``(seed, stream, epoch)``: every epoch is a permutation
of the images (and, with ``random_flip``, a coin per image) drawn from a numpy generator seeded with
those three numbers. Sample ``p`` of the stream (counting from 0 over the whole run) is entry
``p % n`` of epoch ``p // n``, so a run resumed at step ``s`` continues at sample ``s × batch_size``
without any saved iterator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from sdfleet.errors import ValidationError
from sdfleet.specs.training import LoraTrainSpec

INSTANCE_STREAM = 0
CLASS_STREAM = 1


@dataclass(frozen=True, slots=True)
class TrainingImage:
    """A local training image and its caption (None: the spec's instance prompt)."""

    path: Path
    caption: str | None = None


def images_from_spec(
    spec: LoraTrainSpec, paths: Mapping[str, Path | str] | Sequence[Path | str]
) -> list[TrainingImage]:
    """Pair the spec's image references with local files: ``paths`` maps each ``ref`` to a path, or lists
    the paths in the spec's order. Captions come from the spec."""
    out: list[TrainingImage] = []
    for index, item in enumerate(spec.images):
        if isinstance(paths, Mapping):
            if item.ref not in paths:
                raise ValidationError(f"no local file for image {item.ref!r}", field=f"images.{index}.ref")
            path = paths[item.ref]
        else:
            if index >= len(paths):
                raise ValidationError(
                    f"{len(spec.images)} images in the spec, {len(paths)} files given", field="images"
                )
            path = paths[index]
        out.append(TrainingImage(Path(path), item.caption))
    return out


def caption_of(image: TrainingImage, spec: LoraTrainSpec) -> str:
    """The prompt an image is trained with: its caption (with the trigger word put in front when the
    caption lacks it), else the instance prompt."""
    caption = (image.caption or "").strip()
    if not caption:
        return spec.instance_prompt
    if spec.trigger_word and spec.trigger_word not in caption:
        return f"{spec.trigger_word}, {caption}"
    return caption


@dataclass(frozen=True, slots=True)
class Prepared:
    """A square training picture in [-1, 1] ([3, r, r]) and its SDXL size conditioning."""

    pixels: torch.Tensor
    original_size: tuple[int, int]
    """(height, width) of the file."""
    crop_top_left: tuple[int, int]
    """(top, left) of the crop in the resized picture."""


def prepare(path: Path, resolution: int, *, field: str = "images", flip: bool = False) -> Prepared:
    """Load ``path``, scale its shorter side to ``resolution`` (Lanczos), crop the centre square."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValidationError(f"{path.name} is not a readable image: {exc}", field=field) from exc
    width, height = image.size
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = new_w - left - resolution
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return Prepared(pixels, (height, width), (top, left))


class SampleOrder:
    """The data stream of one image set: sample position → (image index, flipped)."""

    def __init__(self, count: int, seed: int, stream: int, *, random_flip: bool) -> None:
        if count < 1:
            raise ValueError("an empty image set has no order")
        self.count = count
        self.seed = seed
        self.stream = stream
        self.random_flip = random_flip
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(permutation, flips) of ``epoch``: a function of (seed, stream, epoch) only."""
        cached = self._epochs.get(epoch)
        if cached is None:
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            order = rng.permutation(self.count)
            flips = rng.random(self.count) < 0.5 if self.random_flip else np.zeros(self.count, dtype=bool)
            if len(self._epochs) > 4:
                self._epochs.clear()
            cached = self._epochs[epoch] = (order, flips)
        return cached

    def at(self, position: int) -> tuple[int, bool]:
        """Image index and flip of sample ``position`` of the whole run."""
        epoch, offset = divmod(position, self.count)
        order, flips = self.epoch(epoch)
        return int(order[offset]), bool(flips[offset])

    def batch(self, step: int, batch_size: int) -> list[tuple[int, bool]]:
        """The samples of optimizer step ``step`` (1-based)."""
        start = (step - 1) * batch_size
        return [self.at(start + i) for i in range(batch_size)]
