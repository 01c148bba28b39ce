"""T2I-Adapters inside sdfleet's own sampling loop, as the A1111 ControlNet extension applies them (it treats
adapters as ControlNet models: the same units, the same fields).

An adapter's features depend on the control image alone — not on the latents, the timestep or the prompt — so
they are computed **once per pass** (:meth:`AdapterPass.prepare`: one adapter forward per unit), and every step
only scales them and hands them to the UNet as ``down_intrablock_additional_residuals``:

* inside the unit's guidance window only (outside it nothing is added);
* **Balanced**: every row (unconditional and conditional) gets features × ``weight``;
* **My prompt is more important**: feature ``k`` × ``weight · (0.25, 0.62, 0.825, 1.0)[k]`` (the extension's
  soft weights for adapters);
* **ControlNet is more important**: those soft weights, on the conditional rows only;
* ``effective_region_mask`` limits where a unit steers, as for ControlNets (features × the mask resized
  to each feature);
* several adapter units add up (and add to the ControlNets' residuals, which go in elsewhere in the UNet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from sdfleet.domain import ControlNetUnit
from sdfleet.engine.controlnet.adapter import LoadedAdapter
from sdfleet.engine.controlnet.apply import fit_control, fit_region, region_at, to_hint
from sdfleet.engine.sd.residuals import Residuals, StepInput
from sdfleet.errors import ValidationError

__all__ = ["ADAPTER_SOFT", "AdapterPass", "PreparedAdapter"]

ADAPTER_SOFT = (0.25, 0.62, 0.825, 1.0)
"""The extension's soft-injection weights of an adapter's features, shallow to deep."""


@dataclass(slots=True)
class PreparedAdapter:
    """One adapter unit of a pass: its settings and its features (one row per picture of the batch), computed
    once."""

    index: int
    unit: ControlNetUnit
    adapter: LoadedAdapter
    features: list[torch.Tensor]

    def active(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` is inside the unit's guidance window."""
        fraction = step / max(1, steps)
        return self.unit.weight > 0 and self.unit.guidance_start <= fraction <= self.unit.guidance_end

    def scales(self) -> list[float]:
        """Each feature's weight under the unit's control mode."""
        weight = self.unit.weight
        if self.unit.control_mode == "Balanced":
            return [weight] * len(self.features)
        soft = [weight * s for s in ADAPTER_SOFT]
        return soft[: len(self.features)] + [weight] * max(0, len(self.features) - len(soft))


@dataclass(slots=True)
class AdapterPass:
    """The T2I-Adapter units steering one sampling pass of one batch (a
    :class:`~sdfleet.engine.sd.residuals.ResidualSource`)."""

    units: list[PreparedAdapter] = field(default_factory=list)

    @classmethod
    def prepare(
        cls,
        units: Sequence[tuple[int, ControlNetUnit, LoadedAdapter, Sequence[Image.Image]]],
        size: tuple[int, int],
        *,
        device: torch.device,
        dtype: torch.dtype,
        regions: dict[int, Image.Image] | None = None,
    ) -> AdapterPass:
        """Fit each unit's control images (one per picture) to ``size`` and run the adapter on them once
        (``regions``: the units' effective-region masks, by unit index, applied to the features now)."""
        width, height = size
        prepared = []
        for index, unit, adapter, pictures in units:
            factor = adapter.downscale
            if width % factor or height % factor:
                raise ValidationError(
                    f"T2I-Adapter {unit.model!r} needs a width and height that are multiples of {factor} "
                    f"(the picture is {width}×{height})",
                    field="width" if width % factor else "height",
                )
            hint = to_hint([fit_control(p, width, height, unit.resize_mode) for p in pictures])
            with torch.no_grad():
                features = list(adapter.module(hint.to(device=device, dtype=dtype)))
            if regions and index in regions:
                region = fit_region(regions[index], size, unit.resize_mode).to(device=device, dtype=dtype)
                features = [f * region_at(region, f) for f in features]
            prepared.append(PreparedAdapter(index, unit, adapter, features))
        return cls(prepared)

    def step_residuals(self, at: StepInput) -> Residuals | None:
        """The summed features of the units active at this step, for every row group (the unconditional
        rows left out for "ControlNet is more important" under guidance)."""
        total: list[torch.Tensor] | None = None
        for prepared in self.units:
            if not prepared.active(at.step, at.steps):
                continue
            cond_only = prepared.unit.control_mode == "ControlNet is more important" and at.guided
            rows = []
            for feature, scale in zip(prepared.features, prepared.scales(), strict=True):
                scaled = feature * scale
                groups = [
                    torch.zeros_like(scaled) if (cond_only and g == 0) else scaled for g in range(at.groups)
                ]
                rows.append(torch.cat(groups))
            total = rows if total is None else [a + b for a, b in zip(total, rows, strict=True)]
        return None if total is None else Residuals(intrablock=total)
