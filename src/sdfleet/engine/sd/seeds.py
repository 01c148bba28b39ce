"""Seeds and initial noise that reproduce on any machine (A1111's "CPU" RNG, ``modules/rng.py``).

Every image has its own CPU ``torch.Generator`` seeded with that image's seed; its noise is drawn from
it on the CPU (so a batch gives exactly what each seed gives alone), optionally blended with the
variation seed's noise by A1111's ``slerp``, and the stacked batch is moved to the device. The same
generators then feed the sampler's per-step noise (ancestral and SDE samplers), as A1111 does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SEED_RANGE = 4294967294


def resolve_seed(seed: int) -> int:
    """``-1`` draws a random seed in A1111's range; anything else is returned as is."""
    return random.randrange(SEED_RANGE) if seed == -1 else seed


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """Per-image seeds of a job: ``seeds[i]`` / ``subseeds[i]`` for image ``i`` of batch_size × n_iter."""

    seeds: tuple[int, ...]
    subseeds: tuple[int, ...]
    strength: float

    @classmethod
    def for_job(cls, seed: int, subseed: int, strength: float, count: int) -> SeedPlan:
        """A1111's rule: ``seed + i`` per image, except with a variation strength, where every image keeps
        the seed and only the subseeds count up."""
        base, sub = resolve_seed(seed), resolve_seed(subseed)
        seeds = tuple(base if strength else base + i for i in range(count))
        return cls(seeds, tuple(sub + i for i in range(count)), strength)

    def batch(self, index: int, size: int) -> SeedPlan:
        """The plan of batch ``index`` (images ``index*size`` … ``index*size+size-1``)."""
        part = slice(index * size, (index + 1) * size)
        return SeedPlan(self.seeds[part], self.subseeds[part], self.strength)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two noise tensors [C, H, W] (norms over dim 1, quirks kept)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(
        1
    ) * high


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One fresh CPU generator per image."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(
    plan: SeedPlan, shape: tuple[int, int, int], gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """Noise [B, C, H, W] (CPU, float32): each image's from its generator, blended with the variation
    seed's noise when the plan has a strength."""
    images = []
    for i, generator in enumerate(gens):
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if plan.strength:
            sub = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(plan.subseeds[i]))
            noise = slerp(plan.strength, noise, sub)
        images.append(noise)
    return torch.stack(images)
