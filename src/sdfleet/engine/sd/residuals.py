"""What the sampling loop (:mod:`sdfleet.engine.sd.sampling`) asks of everything that adds residuals to the
UNet at a step — ControlNets and ControlNet Union (:class:`~sdfleet.engine.controlnet.apply.ControlPass`),
T2I-Adapters (:class:`~sdfleet.engine.controlnet.adapter.AdapterPass`): a :class:`ResidualSource` is given the
step's UNet inputs (:class:`StepInput`) and answers :class:`Residuals` (or None when it has nothing to add at
that step); the loop adds the answers of all sources up and hands them to the UNet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["ResidualSource", "Residuals", "StepInput", "gather"]


@dataclass(frozen=True, slots=True)
class StepInput:
    """The UNet's inputs at step ``step`` of ``steps``: the scaled latents of every row group (``groups``
    groups of ``batch`` rows; ``guided``: the first group is the unconditional one), the timestep, the text
    embeddings and SDXL's added conditioning."""

    step: int
    steps: int
    sample: torch.Tensor
    timestep: torch.Tensor
    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None
    groups: int
    guided: bool

    @property
    def batch(self) -> int:
        """Rows per group (the pictures of the batch)."""
        return int(self.sample.shape[0]) // max(1, self.groups)


@dataclass(slots=True)
class Residuals:
    """Residuals for one UNet call: a ControlNet's (``down``: one per down-block output, ``mid``: the middle
    block's) and a T2I-Adapter's (``intrablock``: one per down block, added inside it)."""

    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    intrablock: list[torch.Tensor] | None = None

    def plus(self, other: Residuals) -> Residuals:
        """The sum of both (a part missing on one side is the other's)."""
        return Residuals(
            _sum_lists(self.down, other.down),
            other.mid if self.mid is None else (self.mid if other.mid is None else self.mid + other.mid),
            _sum_lists(self.intrablock, other.intrablock),
        )

    def unet_kwargs(self) -> dict[str, Any]:
        """The UNet's keyword arguments for these residuals (fresh lists: the UNet pops the adapter's)."""
        kwargs: dict[str, Any] = {}
        if self.down is not None and self.mid is not None:
            kwargs["down_block_additional_residuals"] = list(self.down)
            kwargs["mid_block_additional_residual"] = self.mid
        if self.intrablock is not None:
            kwargs["down_intrablock_additional_residuals"] = list(self.intrablock)
        return kwargs


class ResidualSource(Protocol):
    """Something that adds residuals to the UNet at some steps."""

    def step_residuals(self, at: StepInput) -> Residuals | None:
        """Its residuals at this step, or None when it adds nothing here."""
        ...


def gather(sources: tuple[ResidualSource, ...] | list[ResidualSource], at: StepInput) -> dict[str, Any]:
    """The UNet keyword arguments of every source's residuals at this step, summed (empty: none)."""
    total: Residuals | None = None
    for source in sources:
        found = source.step_residuals(at)
        if found is not None:
            total = found if total is None else total.plus(found)
    return {} if total is None else total.unet_kwargs()


def _sum_lists(a: list[torch.Tensor] | None, b: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    if a is None or b is None:
        return a if b is None else b
    return [x + y for x, y in zip(a, b, strict=True)]
