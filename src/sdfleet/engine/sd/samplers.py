"""A1111 sampler and schedule names → a fresh diffusers scheduler for one job.

Names are resolved with the A1111 tables (:mod:`sdfleet.a1111.samplers`: display names, aliases such as
``k_euler_a``, legacy combined names such as "DPM++ 2M Karras"); each entry says which diffusers class and
options come closest. This engine runs every sampler whose diffusers counterpart is the same algorithm or
a close variant, and refuses, with a clear error naming the field, the ones diffusers has nothing like
(DPM fast, DPM adaptive, Restart, DDIM CFG++) and schedules it cannot produce (KL Optimal, Align Your
Steps, Beta without scipy).

"Automatic" means the sampler's default schedule (Karras for DPM++ 2M…); k-diffusion samplers without
one use the model's discrete schedule, uniform in timesteps (diffusers' ``linspace`` spacing), as A1111
does. Timestep samplers (DDIM, PLMS, UniPC, LCM) keep their own spacing and ignore the schedule, as in
A1111.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sdfleet.a1111 import (
    SAMPLERS,
    SCHEDULERS,
    SamplerInfo,
    SchedulerInfo,
    UnknownSamplerError,
    UnknownSchedulerError,
    effective_scheduler,
    resolve_sampler,
    resolve_scheduler,
)
from sdfleet.errors import ValidationError

# diffusers' schedulers hand torch tensors to numpy in ways numpy 2 flags on every job: library noise.
warnings.filterwarnings(
    "ignore", message=r"__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning
)
warnings.filterwarnings("ignore", message=r"__array_wrap__ must accept context", category=DeprecationWarning)

REFUSED_SAMPLERS = frozenset({"DPM fast", "DPM adaptive", "Restart", "DDIM CFG++"})
REFUSED_SCHEDULES = frozenset({"kl_optimal", "align_your_steps"})
_RESETS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}


@dataclass(frozen=True, slots=True)
class SamplerChoice:
    """A resolved sampler: the A1111 entries, the diffusers class name and its options."""

    sampler: SamplerInfo
    scheduler: SchedulerInfo
    class_name: str
    options: Mapping[str, Any]

    @property
    def sampler_label(self) -> str:
        """The infotext "Sampler" value."""
        return self.sampler.name

    @property
    def schedule_label(self) -> str:
        """The infotext "Schedule type" value: the resolved schedule's label, as A1111 writes it ("Karras"
        for DPM++ 2M with Automatic, "Automatic" for samplers without a default schedule)."""
        return effective_scheduler(self.sampler, self.scheduler).label


def supported_samplers() -> list[str]:
    """Sampler names this engine runs here, in A1111's order (without those whose packages are missing)."""
    return [
        s.name
        for s in SAMPLERS
        if s.name not in REFUSED_SAMPLERS
        and not (s.diffusers.class_name and missing_backends(s.diffusers.class_name))
    ]


def supported_schedulers() -> list[str]:
    """Schedule labels this engine runs, in A1111's order."""
    return [s.label for s in SCHEDULERS if s.name not in REFUSED_SCHEDULES]


@lru_cache(maxsize=64)
def missing_backends(class_name: str) -> tuple[str, ...]:
    """Optional packages a diffusers scheduler needs but this environment lacks (LMS: scipy,
    DPM++ SDE: torchsde); diffusers exports a placeholder class in their absence."""
    import diffusers

    backends = getattr(getattr(diffusers, class_name), "_backends", None) or ()
    return tuple(b for b in backends if b != "torch" and importlib.util.find_spec(b) is None)


@lru_cache(maxsize=64)
def _accepted(class_name: str) -> frozenset[str]:
    import diffusers

    cls = getattr(diffusers, class_name)
    return frozenset(inspect.signature(inspect.unwrap(cls.__init__)).parameters)


def resolve(sampler_name: str, scheduler_name: str | None) -> SamplerChoice:
    """Resolve and validate names; :class:`ValidationError` names ``sampler_name`` or ``scheduler``."""
    try:
        resolve_scheduler(scheduler_name)
    except UnknownSchedulerError as exc:
        raise ValidationError(
            f"{exc}; valid schedulers: {', '.join(supported_schedulers())}", field="scheduler"
        ) from exc
    try:
        sampler, scheduler = resolve_sampler(sampler_name, scheduler_name)
    except UnknownSamplerError as exc:
        raise ValidationError(
            f"{exc}; valid samplers: {', '.join(supported_samplers())}", field="sampler_name"
        ) from exc
    except UnknownSchedulerError as exc:  # pragma: no cover - resolve_scheduler above already checked it
        raise ValidationError(str(exc), field="scheduler") from exc
    if sampler.name in REFUSED_SAMPLERS:
        raise ValidationError(
            f"sampler {sampler.name!r} has no diffusers equivalent ({sampler.diffusers.note}); "
            f"valid samplers: {', '.join(supported_samplers())}",
            field="sampler_name",
        )
    class_name = sampler.diffusers.class_name
    if class_name is None:  # pragma: no cover - every sampler entry names a class
        raise ValidationError(f"sampler {sampler.name!r} is not supported", field="sampler_name")
    missing = missing_backends(class_name)
    if missing:
        raise ValidationError(
            f"sampler {sampler.name!r} needs {' and '.join(missing)}, which this worker lacks; "
            f"valid samplers here: {', '.join(supported_samplers())}",
            field="sampler_name",
        )
    options: dict[str, Any] = {k: v for k, v in _RESETS.items() if k in _accepted(class_name)}
    options.update(sampler.diffusers.kwargs)
    if sampler.family == "k-diffusion":
        schedule = effective_scheduler(sampler, scheduler)
        if schedule.name == "automatic":
            schedule = resolve_scheduler("uniform")
        if schedule.name in REFUSED_SCHEDULES:
            raise ValidationError(
                f"schedule {schedule.label!r} is not available in this engine ({schedule.diffusers.note}); "
                f"valid schedulers: {', '.join(supported_schedulers())}",
                field="scheduler",
            )
        if schedule.name == "beta" and importlib.util.find_spec("scipy") is None:
            raise ValidationError("schedule 'Beta' needs scipy, which this worker lacks", field="scheduler")
        unsupported = [k for k in schedule.diffusers.kwargs if k not in _accepted(class_name)]
        if unsupported:
            raise ValidationError(
                f"schedule {schedule.label!r} cannot be used with sampler {sampler.name!r} in diffusers "
                f"({class_name} has no {', '.join(unsupported)})",
                field="scheduler",
            )
        options.update(schedule.diffusers.kwargs)
    return SamplerChoice(sampler, scheduler, class_name, options)


def make_scheduler(choice: SamplerChoice, base_config: Mapping[str, Any]) -> Any:
    """A new diffusers scheduler of the chosen class, from the model's scheduler config plus options."""
    import diffusers

    cls = getattr(diffusers, choice.class_name)
    return cls.from_config(dict(base_config), **choice.options)
