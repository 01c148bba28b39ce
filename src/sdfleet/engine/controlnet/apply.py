"""ControlNet units inside sdfleet's own sampling loop (:mod:`sdfleet.engine.sd.sampling`), as the A1111
ControlNet extension applies them:

* a unit runs only inside its guidance window — steps ``i`` of ``n`` with ``start ≤ i / n ≤ end`` (outside
  it the net is not called at all; diffusers' pipelines would still run it at scale 0);
* **Balanced**: the net on every row (unconditional and conditional), its residuals × ``weight``;
* **My prompt is more important** ("soft injection"): residual ``k`` of ``K`` (the down blocks', then the
  middle block's) × ``weight · 0.825^(K−1−k)`` — for SD 1.x/2.x nets (K = 13) the extension's
  ``0.825^(12−i)``; the middle block keeps the full weight;
* **ControlNet is more important**: soft injection, and the net on the conditional rows only (the
  unconditional rows get no residual), which halves its cost under classifier-free guidance;
* the control image goes through the net's hint encoder once per pass, not once per step;
* several units add their residuals;
* a ControlNet Union (xinsir's ControlNet++, SDXL) takes the unit's ``union_control_type`` with its image (the
  task embedding it selects, one-hot per row); several units may name the same Union net, each with its own
  type, image, weight and window — one forward per unit, the net loaded once.

A unit's ``module`` first turns its image into a control map (:mod:`.preprocess`, inline: the model-free
modules cost milliseconds); the map is fitted to the pass's size with the extension's resize modes
(:func:`fit_control`). Each unit's first map is kept for the job's detected maps (:attr:`ControlPass.maps`).

Masks, as the extension reads them: an inpaint module's ``mask`` becomes its map's alpha channel, and the
hint is the picture with −1 where the mask is set (``rgb·(1 − m) − m``); for other modules a ``mask`` that
is not blank (not all ≤ 5 or all ≥ 250) is a scribble drawn on the canvas and becomes the picture the module
reads. ``effective_region_mask`` limits where a unit steers: each of its residuals × the mask (fitted like
the control image, one channel in [0, 1]) bilinearly resized to the residual's size."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from PIL import Image

from sdfleet.domain import ControlNetUnit
from sdfleet.engine.controlnet.loader import LoadedControlNet, union_type_index
from sdfleet.engine.controlnet.preprocess import display_map, pixel_perfect_resolution, preprocess
from sdfleet.engine.sd.residuals import Residuals, StepInput
from sdfleet.errors import ValidationError
from sdfleet.specs.controlnet import module_named

__all__ = [
    "ControlPass",
    "PassUnits",
    "PreparedUnit",
    "controlnet_infotext",
    "fit_control",
    "fit_region",
    "pass_pictures",
    "region_at",
    "soft_scales",
    "to_hint",
]

SOFT_BASE = 0.825


def soft_scales(weight: float, count: int) -> list[float]:
    """Soft injection's per-residual weights: ``weight · 0.825^(count−1−k)`` for residual ``k``."""
    return [weight * SOFT_BASE ** float(count - 1 - k) for k in range(count)]


def fit_control(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """The control image at ``width`` × ``height``: ``Just Resize`` stretches it; ``Crop and Resize`` scales
    it to cover and cuts the middle; ``Resize and Fill`` scales it to fit inside and fills the rest with
    the median colour of its border (the extension's background). An inpaint map (RGBA, the mask as alpha)
    keeps its mask, and the filled border counts as masked (to be painted), as the extension fills it."""
    rgb = image.convert("RGBA" if image.mode == "RGBA" else "RGB")
    if mode == "Just Resize":
        return rgb.resize((width, height), Image.Resampling.LANCZOS)
    ratio = (max if mode == "Crop and Resize" else min)(width / rgb.width, height / rgb.height)
    new_w, new_h = max(1, round(rgb.width * ratio)), max(1, round(rgb.height * ratio))
    scaled = rgb.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if mode == "Crop and Resize":
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    pixels = np.asarray(rgb)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]], axis=0)
    fill = tuple(int(v) for v in np.median(border, axis=0))
    if rgb.mode == "RGBA":
        fill = (*fill[:3], 255)
    canvas = Image.new(rgb.mode, (width, height), fill)
    canvas.paste(scaled, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def controlnet_infotext(unit: ControlNetUnit, short_hash: str) -> str:
    """A unit's ``ControlNet N`` infotext value, the extension's fields in its order (the net by its
    registry name and the first 8 hex digits of its sha256)."""
    model = f"{unit.model} [{short_hash}]"
    fields = [
        ("Module", unit.module),
        ("Model", model),
        ("Weight", f"{unit.weight:g}"),
        ("Resize Mode", unit.resize_mode),
        ("Processor Res", str(unit.processor_res)),
        ("Threshold A", f"{unit.threshold_a:g}" if unit.threshold_a is not None else "-1"),
        ("Threshold B", f"{unit.threshold_b:g}" if unit.threshold_b is not None else "-1"),
        ("Guidance Start", f"{unit.guidance_start:g}"),
        ("Guidance End", f"{unit.guidance_end:g}"),
        ("Pixel Perfect", str(unit.pixel_perfect)),
        ("Control Mode", unit.control_mode),
    ]
    return ", ".join(f"{k}: {v}" for k, v in fields)


def _blank(mask: Image.Image) -> bool:
    """A mask with nothing drawn on it (the extension's test: all ≤ 5 or all ≥ 250 in its first channel)."""
    plane = np.asarray(mask.convert("RGB"))[:, :, 0]
    return bool((plane <= 5).all() or (plane >= 250).all())


def _detected(
    unit: ControlNetUnit,
    index: int,
    pictures: Sequence[Image.Image],
    size: tuple[int, int],
    mask: Image.Image | None = None,
) -> list[Image.Image]:
    """The unit's control maps: each picture through its preprocessor (once per distinct picture), at the
    unit's processor resolution — or, with Pixel Perfect, the one that fits the pass's size one to one. The
    unit's ``mask`` goes to an inpaint module beside the picture; for any other module a drawn mask is the
    picture itself (the extension's canvas scribble). A ``preprocessed`` unit's image is its map already (an
    annotate job made it)."""
    if unit.preprocessed:
        return list(pictures)
    needs_mask = module_named(unit.module, f"controlnet.{index}.module").needs_mask
    if mask is not None and not needs_mask and not _blank(mask):
        scribble = Image.fromarray(np.asarray(mask.convert("RGB"))[:, :, 0]).convert("RGB")
        pictures = [scribble] * len(pictures)
    if unit.module.lower() == "none":
        return list(pictures)
    made: dict[int, Image.Image] = {}
    out = []
    for picture in pictures:
        if id(picture) not in made:
            resolution = unit.processor_res
            if unit.pixel_perfect:
                resolution = pixel_perfect_resolution(picture, size[0], size[1], unit.resize_mode)
            made[id(picture)] = preprocess(
                unit.module,
                picture,
                resolution=max(1, resolution),
                threshold_a=unit.threshold_a,
                threshold_b=unit.threshold_b,
                mask=mask if needs_mask else None,
                field=f"controlnet.{index}.module",
            )
        out.append(made[id(picture)])
    return out


def to_hint(images: Sequence[Image.Image]) -> torch.Tensor:
    """The net's hint in [0, 1]; an inpaint map's masked pixels (alpha > 0.5) are −1 (the inpaint nets'
    protocol: ``rgb·(1 − m) − m``)."""
    arrays = []
    for image in images:
        values = np.asarray(image, dtype=np.float32) / 255.0
        if image.mode == "RGBA":
            masked = (values[:, :, 3:4] > 0.5).astype(np.float32)
            values = values[:, :, :3] * (1.0 - masked) - masked
        else:
            values = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        arrays.append(values)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def fit_region(mask: Image.Image, size: tuple[int, int], resize_mode: str) -> torch.Tensor:
    """An effective-region mask at the pass's size, one channel in [0, 1], shaped (1, 1, H, W)."""
    fitted = fit_control(mask.convert("RGB"), size[0], size[1], resize_mode)
    plane = np.asarray(fitted, dtype=np.float32)[:, :, 0] / 255.0
    return torch.from_numpy(np.ascontiguousarray(plane))[None, None]


class _Fixed(torch.nn.Module):
    """Stands in for a net's hint encoder during a step: the embedding computed once for the pass."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, _hint: torch.Tensor) -> torch.Tensor:
        return self.value


@dataclass(slots=True)
class PreparedUnit:
    """One unit of a pass: its settings, its net, and its control image embedded by the net's hint encoder
    (one row per picture of the batch). ``calls`` counts the net's forward passes (for tests, benchmarks)."""

    index: int
    unit: ControlNetUnit
    net: LoadedControlNet
    embedded: torch.Tensor
    calls: int = 0
    region: torch.Tensor | None = None
    """Where the unit steers (``effective_region_mask``), (1, 1, H, W) in [0, 1]; None: everywhere."""
    union_type: int | None = None
    """ControlNet Union: the task embedding the unit's ``union_control_type`` selects."""

    def active(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` is inside the unit's guidance window."""
        fraction = step / max(1, steps)
        return self.unit.weight > 0 and self.unit.guidance_start <= fraction <= self.unit.guidance_end

    @property
    def soft(self) -> bool:
        return self.unit.control_mode != "Balanced"

    @property
    def cond_only(self) -> bool:
        return self.unit.control_mode == "ControlNet is more important"


Net = TypeVar("Net")


@dataclass(slots=True)
class PassUnits(Generic[Net]):
    """The units that steer one pass, each with its control maps (``chosen``), their effective-region masks
    and their detected maps (the first map of each unit that saves one), by unit index."""

    chosen: list[tuple[int, ControlNetUnit, Net, list[Image.Image]]]
    regions: dict[int, Image.Image]
    maps: dict[int, Image.Image]


def pass_pictures(
    units: Sequence[tuple[int, ControlNetUnit, Net]],
    size: tuple[int, int],
    sources: Sequence[Image.Image | None],
    *,
    hires: bool,
    enable_hr: bool,
    image: Callable[[str, str], Image.Image],
) -> PassUnits[Net]:
    """The units that steer one pass (``hr_option``: both passes, the first only or the hires pass only),
    each with its control maps: its own image (``image(ref, field)`` opens it), else each picture's init image
    (``sources``, one per picture; None on txt2img), through the unit's preprocessor (with its mask)."""
    skip = "Low res only" if hires else "High res only"
    chosen = []
    regions: dict[int, Image.Image] = {}
    maps: dict[int, Image.Image] = {}
    for index, unit, net in units:
        if unit.hr_option == skip or (hires and not enable_hr):
            continue
        field = f"controlnet.{index}.image"
        if unit.image is not None:
            pictures = [image(unit.image, field)] * len(sources)
        elif all(s is not None for s in sources):
            pictures = [s for s in sources if s is not None]
        else:
            raise ValidationError("a ControlNet unit needs an image", field=field)
        mask = image(unit.mask, f"controlnet.{index}.mask") if unit.mask is not None else None
        if unit.effective_region_mask is not None:
            regions[index] = image(unit.effective_region_mask, f"controlnet.{index}.effective_region_mask")
        detected = _detected(unit, index, pictures, size, mask)
        if unit.save_detected_map and detected:
            maps[index] = display_map(unit.module, detected[0])
        chosen.append((index, unit, net, detected))
    return PassUnits(chosen, regions, maps)


@dataclass(slots=True)
class ControlPass:
    """The units steering one sampling pass (first pass or hires pass) of one batch."""

    units: list[PreparedUnit] = field(default_factory=list)
    maps: dict[int, Image.Image] = field(default_factory=dict)
    """Each unit's detected map (its first picture's control map, as the extension shows it), by unit index."""

    @classmethod
    def prepare(
        cls,
        units: Sequence[tuple[int, ControlNetUnit, LoadedControlNet, Sequence[Image.Image]]],
        size: tuple[int, int],
        *,
        device: torch.device,
        dtype: torch.dtype,
        regions: dict[int, Image.Image] | None = None,
    ) -> ControlPass:
        """Fit each unit's control images (one per picture of the batch) to ``size`` and embed them;
        ``regions``: the units' effective-region masks, by unit index."""
        prepared = []
        width, height = size
        for index, unit, net, pictures in units:
            hint = to_hint([fit_control(p, width, height, unit.resize_mode) for p in pictures])
            with torch.no_grad():
                embedded = net.module.controlnet_cond_embedding(hint.to(device=device, dtype=dtype))
            region = None
            if regions and index in regions:
                region = fit_region(regions[index], size, unit.resize_mode).to(device=device, dtype=dtype)
            union_type = union_type_index(net, unit, index) if net.union else None
            prepared.append(PreparedUnit(index, unit, net, embedded, region=region, union_type=union_type))
        return cls(prepared)

    @classmethod
    def for_pass(
        cls,
        units: Sequence[tuple[int, ControlNetUnit, LoadedControlNet]],
        size: tuple[int, int],
        sources: Sequence[Image.Image | None],
        *,
        hires: bool,
        enable_hr: bool,
        image: Callable[[str, str], Image.Image],
        device: torch.device,
        dtype: torch.dtype,
    ) -> ControlPass | None:
        """The units that steer one pass (``hr_option``: both passes, the first only or the hires pass
        only) with their control images: the unit's own (``image(ref, field)`` opens it), else each
        picture's init image (``sources``, one per picture; None on txt2img). None when no unit steers it."""
        picked = pass_pictures(units, size, sources, hires=hires, enable_hr=enable_hr, image=image)
        if not picked.chosen:
            return None
        made = cls.prepare(picked.chosen, size, device=device, dtype=dtype, regions=picked.regions)
        made.maps = picked.maps
        return made

    def step_residuals(self, at: StepInput) -> Residuals | None:
        """The sampling loop's door (:class:`~sdfleet.engine.sd.residuals.ResidualSource`): :meth:`residuals`."""
        found = self.residuals(
            at.step, at.steps, at.sample, at.timestep, at.embeds, at.added, groups=at.groups, guided=at.guided
        )
        return None if found is None else Residuals(down=found[0], mid=found[1])

    def residuals(
        self,
        step: int,
        steps: int,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeds: torch.Tensor,
        added: dict[str, torch.Tensor] | None,
        *,
        groups: int,
        guided: bool,
    ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """The summed residuals of the units active at this step for the UNet's ``groups`` row groups
        (``guided``: the first group is the unconditional one), or None when none is active."""
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        rows = sample.shape[0]
        batch = rows // groups
        for prepared in self.units:
            if not prepared.active(step, steps):
                continue
            skip = batch if (prepared.cond_only and guided and groups > 1) else 0
            kept = groups - (1 if skip else 0)
            extra = None if added is None else {k: v[skip:] for k, v in added.items()}
            hint = torch.cat([prepared.embedded] * kept)
            unit_down, unit_mid = self._run(prepared, sample[skip:], timestep, embeds[skip:], extra, hint)
            outputs = [*unit_down, unit_mid]
            weights = (
                soft_scales(prepared.unit.weight, len(outputs))
                if prepared.soft
                else [prepared.unit.weight] * len(outputs)
            )
            scaled = [o * w for o, w in zip(outputs, weights, strict=True)]
            if prepared.region is not None:  # the unit steers only inside its region
                scaled = [o * region_at(prepared.region, o) for o in scaled]
            if skip:  # the unconditional rows get nothing
                scaled = [torch.cat([torch.zeros_like(o[:skip]), o]) for o in scaled]
            if down is None or mid is None:
                down, mid = scaled[:-1], scaled[-1]
            else:
                down = [a + b for a, b in zip(down, scaled[:-1], strict=True)]
                mid = mid + scaled[-1]
        return None if down is None or mid is None else (down, mid)

    @staticmethod
    def _run(
        prepared: PreparedUnit,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeds: torch.Tensor,
        added: dict[str, torch.Tensor] | None,
        hint: torch.Tensor,
    ) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        module = prepared.net.module
        prepared.calls += 1
        if prepared.union_type is not None:  # one condition: its type one-hot on every row
            kinds = torch.zeros(
                (sample.shape[0], int(module.config.num_control_type)),
                device=sample.device,
                dtype=sample.dtype,
            )
            kinds[:, prepared.union_type] = 1
            with _embedded(module, hint):
                found: tuple[Sequence[torch.Tensor], torch.Tensor] = module(
                    sample,
                    timestep,
                    encoder_hidden_states=embeds,
                    controlnet_cond=[hint],
                    control_type=kinds,
                    control_type_idx=[prepared.union_type],
                    conditioning_scale=1.0,
                    added_cond_kwargs=added,
                    return_dict=False,
                )
            return found
        with _embedded(module, hint):
            out: tuple[Sequence[torch.Tensor], torch.Tensor] = module(
                sample,
                timestep,
                encoder_hidden_states=embeds,
                controlnet_cond=hint,
                conditioning_scale=1.0,
                added_cond_kwargs=added,
                return_dict=False,
            )
        return out


def region_at(region: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The region mask bilinearly resized to a residual's height × width (the extension's
    ``apply_effective_region_mask``)."""
    return torch.nn.functional.interpolate(region, size=tuple(residual.shape[-2:]), mode="bilinear")


@contextmanager
def _embedded(module: Any, value: torch.Tensor) -> Iterator[None]:
    """The net's hint encoder replaced by the pass's precomputed embedding for one call."""
    original = module.controlnet_cond_embedding
    module.controlnet_cond_embedding = _Fixed(value)
    try:
        yield
    finally:
        module.controlnet_cond_embedding = original
