"""A1111 1.10's sampler and scheduler tables, name resolution, and hints for mapping them to diffusers.

:data:`SAMPLERS` and :data:`SCHEDULERS` are what ``/sdapi/v1/samplers`` and ``/sdapi/v1/schedulers`` list, in
A1111's order. Two ways to resolve names:

- :func:`get_sampler_and_scheduler` is A1111's own resolution, used by its API: a legacy combined name such as
  "DPM++ 2M Karras" is split into sampler and scheduler, names are matched exactly, and an unknown sampler
  silently becomes the first one ("DPM++ 2M").
- :func:`resolve_sampler` and :func:`resolve_scheduler` are strict and case-insensitive; they also accept
  aliases (``k_euler_a``, ``k_dpmpp_2m_ka``…) and raise :class:`UnknownSamplerError` /
  :class:`UnknownSchedulerError` listing close matches.

Each entry also carries the diffusers scheduler class and keyword arguments that come closest to it, as plain
strings and values (nothing here imports diffusers); ``exact`` says whether diffusers reproduces A1111's
algorithm or only approximates it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from sdfleet.a1111.errors import UnknownSamplerError, UnknownSchedulerError

__all__ = [
    "LEGACY_SAMPLER_NAMES",
    "SAMPLERS",
    "SCHEDULERS",
    "DiffusersConfig",
    "OptionValue",
    "SamplerInfo",
    "SchedulerInfo",
    "effective_scheduler",
    "get_hr_sampler_and_scheduler",
    "get_sampler_and_scheduler",
    "infotext_sampler_and_scheduler",
    "resolve_sampler",
    "resolve_scheduler",
    "sampler_by_name",
    "scheduler_by_name",
]

OptionValue = str | int | float | bool
"""A value in a sampler's A1111 options or in diffusers keyword arguments."""

SamplerFamily = Literal["k-diffusion", "timesteps", "lcm"]


def _frozen(values: Mapping[str, OptionValue] | None = None) -> Mapping[str, OptionValue]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class DiffusersConfig:
    """The diffusers scheduler that comes closest to an A1111 sampler or schedule, as names and values.

    For a sampler, ``class_name`` is the diffusers scheduler class and ``kwargs`` go to
    ``SchedulerClass.from_config(base_config, **kwargs)``. For a schedule, ``class_name`` is None and ``kwargs``
    are added on top of the sampler's. ``exact`` is False when diffusers only approximates A1111's algorithm;
    ``note`` says how.
    """

    class_name: str | None
    kwargs: Mapping[str, OptionValue] = field(default_factory=_frozen)
    exact: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class SchedulerInfo:
    """One entry of ``/sdapi/v1/schedulers``: a sigma schedule ("Schedule type" in the infotext)."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    diffusers: DiffusersConfig = field(default_factory=lambda: DiffusersConfig(None))

    def as_api(self) -> dict[str, object]:
        """The item as ``/sdapi/v1/schedulers`` returns it (``aliases`` is null when there are none)."""
        return {
            "name": self.name,
            "label": self.label,
            "aliases": list(self.aliases) or None,
            "default_rho": self.default_rho,
            "need_inner_model": self.need_inner_model,
        }


@dataclass(frozen=True, slots=True)
class SamplerInfo:
    """One entry of ``/sdapi/v1/samplers``.

    ``options`` are A1111's sampler options (``scheduler`` is the default schedule's name, ``second_order``,
    ``brownian_noise``, ``uses_ensd``, ``discard_next_to_last_sigma``, ``solver_type``).
    """

    name: str
    aliases: tuple[str, ...]
    family: SamplerFamily
    options: Mapping[str, OptionValue]
    diffusers: DiffusersConfig

    @property
    def default_scheduler(self) -> str | None:
        """The schedule "Automatic" stands for with this sampler, or None for the model's own schedule."""
        value = self.options.get("scheduler")
        return str(value) if value is not None else None

    @property
    def second_order(self) -> bool:
        """True for samplers that call the model twice per step (A1111 doubles their prompt-schedule steps)."""
        return bool(self.options.get("second_order", False))

    @property
    def uses_ensd(self) -> bool:
        """True when the "ENSD" (eta noise seed delta) setting affects this sampler."""
        return bool(self.options.get("uses_ensd", False))

    def total_steps(self, steps: int) -> int:
        """The step count A1111 builds the prompt schedule for: doubled for second-order samplers."""
        return steps * 2 if self.second_order else steps

    def as_api(self) -> dict[str, object]:
        """The item as ``/sdapi/v1/samplers`` returns it (option values are strings there)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "options": {key: str(value) for key, value in self.options.items()},
        }


def _scheduler(
    name: str,
    label: str,
    diffusers: DiffusersConfig,
    *,
    aliases: tuple[str, ...] = (),
    default_rho: float = -1.0,
    need_inner_model: bool = False,
) -> SchedulerInfo:
    return SchedulerInfo(name, label, aliases, default_rho, need_inner_model, diffusers)


def _diffusers(
    class_name: str | None, exact: bool = True, note: str = "", **kwargs: OptionValue
) -> DiffusersConfig:
    return DiffusersConfig(class_name, _frozen(kwargs), exact, note)


SCHEDULERS: tuple[SchedulerInfo, ...] = (
    _scheduler("automatic", "Automatic", _diffusers(None, note="the sampler's default schedule")),
    _scheduler(
        "uniform",
        "Uniform",
        _diffusers(None, timestep_spacing="linspace"),
        need_inner_model=True,
    ),
    _scheduler("karras", "Karras", _diffusers(None, use_karras_sigmas=True), default_rho=7.0),
    _scheduler(
        "exponential",
        "Exponential",
        _diffusers(None, use_exponential_sigmas=True, timestep_spacing="linspace"),
    ),
    _scheduler(
        "polyexponential",
        "Polyexponential",
        _diffusers(
            None,
            exact=False,
            note="no polyexponential sigmas in diffusers; exponential sigmas are the rho=1 case",
            use_exponential_sigmas=True,
            timestep_spacing="linspace",
        ),
        default_rho=1.0,
    ),
    _scheduler(
        "sgm_uniform",
        "SGM Uniform",
        _diffusers(None, timestep_spacing="trailing"),
        aliases=("SGMUniform",),
        need_inner_model=True,
    ),
    _scheduler(
        "kl_optimal",
        "KL Optimal",
        _diffusers(None, exact=False, note="compute the sigmas and pass them to the pipeline"),
    ),
    _scheduler(
        "align_your_steps",
        "Align Your Steps",
        _diffusers(None, exact=False, note="pass NVIDIA's AYS sigmas (interpolated) to the pipeline"),
    ),
    _scheduler(
        "simple",
        "Simple",
        _diffusers(None, exact=False, note="close to trailing timestep spacing", timestep_spacing="trailing"),
        need_inner_model=True,
    ),
    _scheduler(
        "normal",
        "Normal",
        _diffusers(None, exact=False, note="close to linspace timestep spacing", timestep_spacing="linspace"),
        need_inner_model=True,
    ),
    _scheduler(
        "ddim",
        "DDIM",
        _diffusers(None, timestep_spacing="leading", steps_offset=1),
        need_inner_model=True,
    ),
    _scheduler(
        "beta",
        "Beta",
        _diffusers(None, use_beta_sigmas=True, timestep_spacing="linspace"),
        need_inner_model=True,
    ),
)
"""``/sdapi/v1/schedulers`` in A1111's order; the first, Automatic, is the default."""


def _sampler(
    name: str,
    aliases: tuple[str, ...],
    family: SamplerFamily,
    diffusers: DiffusersConfig,
    **options: OptionValue,
) -> SamplerInfo:
    return SamplerInfo(name, aliases, family, _frozen(options), diffusers)


_DPM_MULTISTEP = "DPMSolverMultistepScheduler"
_DPM_SINGLESTEP = "DPMSolverSinglestepScheduler"

SAMPLERS: tuple[SamplerInfo, ...] = (
    _sampler(
        "DPM++ 2M",
        ("k_dpmpp_2m",),
        "k-diffusion",
        _diffusers(_DPM_MULTISTEP, algorithm_type="dpmsolver++", solver_order=2),
        scheduler="karras",
    ),
    _sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        "k-diffusion",
        _diffusers(
            "DPMSolverSDEScheduler",
            note="needs torchsde; DPMSolverSinglestepScheduler is the torchsde-free approximation",
        ),
        scheduler="karras",
        second_order=True,
        brownian_noise=True,
    ),
    _sampler(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        "k-diffusion",
        _diffusers(
            _DPM_MULTISTEP,
            exact=False,
            note="diffusers draws Gaussian noise per step instead of a Brownian tree",
            algorithm_type="sde-dpmsolver++",
            solver_order=2,
        ),
        scheduler="exponential",
        brownian_noise=True,
    ),
    _sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        "k-diffusion",
        _diffusers(
            _DPM_MULTISTEP,
            exact=False,
            note="diffusers draws Gaussian noise per step instead of a Brownian tree",
            algorithm_type="sde-dpmsolver++",
            solver_order=2,
            solver_type="heun",
        ),
        scheduler="exponential",
        brownian_noise=True,
        solver_type="heun",
    ),
    _sampler(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a",),
        "k-diffusion",
        _diffusers(
            _DPM_SINGLESTEP,
            exact=False,
            note="diffusers has no ancestral single-step DPM++ 2S; this is the deterministic variant",
            algorithm_type="dpmsolver++",
            solver_order=2,
        ),
        scheduler="karras",
        uses_ensd=True,
        second_order=True,
    ),
    _sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        "k-diffusion",
        _diffusers(
            _DPM_MULTISTEP,
            exact=False,
            note="diffusers draws Gaussian noise per step instead of a Brownian tree",
            algorithm_type="sde-dpmsolver++",
            solver_order=3,
        ),
        scheduler="exponential",
        discard_next_to_last_sigma=True,
        brownian_noise=True,
    ),
    _sampler(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        "k-diffusion",
        _diffusers("EulerAncestralDiscreteScheduler"),
        uses_ensd=True,
    ),
    _sampler("Euler", ("k_euler",), "k-diffusion", _diffusers("EulerDiscreteScheduler")),
    _sampler("LMS", ("k_lms",), "k-diffusion", _diffusers("LMSDiscreteScheduler")),
    _sampler(
        "Heun",
        ("k_heun",),
        "k-diffusion",
        _diffusers("HeunDiscreteScheduler"),
        second_order=True,
    ),
    _sampler(
        "DPM2",
        ("k_dpm_2",),
        "k-diffusion",
        _diffusers("KDPM2DiscreteScheduler"),
        scheduler="karras",
        discard_next_to_last_sigma=True,
        second_order=True,
    ),
    _sampler(
        "DPM2 a",
        ("k_dpm_2_a",),
        "k-diffusion",
        _diffusers("KDPM2AncestralDiscreteScheduler"),
        scheduler="karras",
        discard_next_to_last_sigma=True,
        uses_ensd=True,
        second_order=True,
    ),
    _sampler(
        "DPM fast",
        ("k_dpm_fast",),
        "k-diffusion",
        _diffusers(
            _DPM_SINGLESTEP,
            exact=False,
            note="no DPM-Solver-fast in diffusers; third-order single-step DPM-Solver is the closest",
            algorithm_type="dpmsolver",
            solver_order=3,
        ),
        uses_ensd=True,
    ),
    _sampler(
        "DPM adaptive",
        ("k_dpm_ad",),
        "k-diffusion",
        _diffusers(
            _DPM_SINGLESTEP,
            exact=False,
            note="no adaptive-step DPM-Solver in diffusers; A1111's ignores the step count",
            algorithm_type="dpmsolver",
            solver_order=3,
        ),
        uses_ensd=True,
    ),
    _sampler(
        "Restart",
        ("restart",),
        "k-diffusion",
        _diffusers(
            "HeunDiscreteScheduler",
            exact=False,
            note="no Restart sampler in diffusers; Heun is its inner solver",
        ),
        scheduler="karras",
        second_order=True,
    ),
    _sampler(
        "DDIM",
        ("ddim",),
        "timesteps",
        _diffusers("DDIMScheduler", timestep_spacing="leading", steps_offset=1),
    ),
    _sampler(
        "DDIM CFG++",
        ("ddim_cfgpp",),
        "timesteps",
        _diffusers(
            "DDIMScheduler",
            exact=False,
            note="CFG++ changes the guidance step, which diffusers' DDIM does not do",
            timestep_spacing="leading",
            steps_offset=1,
        ),
    ),
    _sampler(
        "PLMS",
        ("plms",),
        "timesteps",
        _diffusers("PNDMScheduler", skip_prk_steps=True, timestep_spacing="leading", steps_offset=1),
    ),
    _sampler(
        "UniPC",
        ("unipc",),
        "timesteps",
        _diffusers(
            "UniPCMultistepScheduler",
            exact=False,
            note="A1111's defaults: variant bh1, order 3, time-uniform skip, lower order at the end",
            solver_type="bh1",
            solver_order=3,
            lower_order_final=True,
        ),
    ),
    _sampler("LCM", ("k_lcm",), "lcm", _diffusers("LCMScheduler")),
)
"""``/sdapi/v1/samplers`` in A1111 1.10's order; the first, DPM++ 2M, is A1111's fallback for unknown names."""

LEGACY_SAMPLER_NAMES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "k_lms_ka": ("LMS", "karras"),
        "k_dpm_2_ka": ("DPM2", "karras"),
        "k_dpm_2_a_ka": ("DPM2 a", "karras"),
        "k_dpmpp_2s_a_ka": ("DPM++ 2S a", "karras"),
        "k_dpmpp_2m_ka": ("DPM++ 2M", "karras"),
        "k_dpmpp_sde_ka": ("DPM++ SDE", "karras"),
        "k_dpmpp_2m_sde_ka": ("DPM++ 2M SDE", "karras"),
        "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", "exponential"),
        "k_dpmpp_2m_sde_heun_ka": ("DPM++ 2M SDE Heun", "karras"),
        "k_dpmpp_2m_sde_heun_exp": ("DPM++ 2M SDE Heun", "exponential"),
        "k_dpmpp_3m_sde_ka": ("DPM++ 3M SDE", "karras"),
        "k_dpmpp_3m_sde_exp": ("DPM++ 3M SDE", "exponential"),
    }
)
"""Aliases of the pre-1.9 combined samplers ("DPM++ 2M Karras" was ``k_dpmpp_2m_ka``): alias → (sampler, scheduler).

The combined display names themselves need no table: they are a sampler name, a space and a scheduler label.
"""

_SAMPLERS_EXACT = {sampler.name: sampler for sampler in SAMPLERS}
_SCHEDULERS_EXACT = {
    **{scheduler.name: scheduler for scheduler in SCHEDULERS},
    **{scheduler.label: scheduler for scheduler in SCHEDULERS},
}
_SAMPLERS_FOLDED = {
    key.casefold(): sampler for sampler in SAMPLERS for key in (sampler.name, *sampler.aliases)
}
_SCHEDULERS_FOLDED = {
    key.casefold(): scheduler
    for scheduler in SCHEDULERS
    for key in (scheduler.name, scheduler.label, *scheduler.aliases)
}


def sampler_by_name(name: str) -> SamplerInfo:
    """The sampler with exactly this display name (as in A1111's ``all_samplers_map``); KeyError otherwise."""
    return _SAMPLERS_EXACT[name]


def scheduler_by_name(name: str) -> SchedulerInfo:
    """The scheduler with exactly this name or label (as in A1111's ``schedulers_map``); KeyError otherwise."""
    return _SCHEDULERS_EXACT[name]


def get_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = True
) -> tuple[str, str]:
    """A1111's resolution of a request's sampler and scheduler: ``(sampler name, scheduler label)``.

    A trailing " <scheduler label, name or alias>" on the sampler name is split off and wins over
    ``scheduler_name``. Matching is exact; an unknown scheduler is Automatic and an unknown (or empty) sampler is
    the first one, DPM++ 2M. With ``convert_automatic``, a scheduler equal to the sampler's default is reported
    as "Automatic".
    """
    scheduler = _SCHEDULERS_EXACT.get(scheduler_name or "", SCHEDULERS[0])
    name = sampler_name or SAMPLERS[0].name
    for candidate in SCHEDULERS:
        for option in (candidate.label, candidate.name, *candidate.aliases):
            if name.endswith(" " + option):
                scheduler = candidate
                name = name[: -(len(option) + 1)]
                break

    sampler = _SAMPLERS_EXACT.get(name, SAMPLERS[0])
    if convert_automatic and sampler.default_scheduler == scheduler.name:
        scheduler = SCHEDULERS[0]
    return sampler.name, scheduler.label


def infotext_sampler_and_scheduler(params: Mapping[str, object]) -> tuple[str, str]:
    """The sampler and scheduler A1111 pastes from a parsed infotext (handles pre-1.9 combined names)."""
    return get_sampler_and_scheduler(
        _optional_str(params.get("Sampler")), _optional_str(params.get("Schedule type"))
    )


def get_hr_sampler_and_scheduler(params: Mapping[str, object]) -> tuple[str, str]:
    """The hires-pass sampler and scheduler A1111 pastes from a parsed infotext.

    Returns "Use same sampler" / "Use same scheduler" when they equal the first pass's values, as A1111 does.
    """
    hr_sampler = _optional_str(params.get("Hires sampler")) or "Use same sampler"
    hr_scheduler = _optional_str(params.get("Hires schedule type")) or "Use same scheduler"
    first_sampler = _optional_str(params.get("Sampler"))
    first_scheduler = _optional_str(params.get("Schedule type"))
    sampler, scheduler = get_sampler_and_scheduler(
        first_sampler if hr_sampler == "Use same sampler" else hr_sampler,
        first_scheduler if hr_scheduler == "Use same scheduler" else hr_scheduler,
    )
    return (
        sampler if sampler != first_sampler else "Use same sampler",
        scheduler if scheduler != first_scheduler else "Use same scheduler",
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def resolve_scheduler(name: str | None) -> SchedulerInfo:
    """The scheduler named ``name`` (name, label or alias, any case); None or "" mean Automatic.

    Raises :class:`UnknownSchedulerError` with the closest names when nothing matches.
    """
    if not name:
        return SCHEDULERS[0]
    found = _SCHEDULERS_FOLDED.get(name.strip().casefold())
    if found is None:
        raise UnknownSchedulerError(
            name, _close_matches(name, [s.label for s in SCHEDULERS], _SCHEDULERS_FOLDED)
        )
    return found


def resolve_sampler(name: str, scheduler: str | None = None) -> tuple[SamplerInfo, SchedulerInfo]:
    """The sampler and scheduler for a sampler name and an optional scheduler name, strictly and in any case.

    Accepts display names ("Euler a"), aliases (``k_euler_a``), legacy combined names ("DPM++ 2M Karras") and
    their aliases (``k_dpmpp_2m_ka``). A scheduler named inside the sampler name wins over ``scheduler``, as in
    A1111. The scheduler is returned as requested (Automatic stays Automatic; see :func:`effective_scheduler`).
    Raises :class:`UnknownSamplerError` or :class:`UnknownSchedulerError` with the closest names.
    """
    key = name.strip().casefold()
    if key in _SAMPLERS_FOLDED:
        return _SAMPLERS_FOLDED[key], resolve_scheduler(scheduler)
    if key in LEGACY_SAMPLER_NAMES:
        sampler_name, scheduler_name = LEGACY_SAMPLER_NAMES[key]
        return _SAMPLERS_EXACT[sampler_name], resolve_scheduler(scheduler_name)
    for suffix, found in sorted(_SCHEDULERS_FOLDED.items(), key=lambda item: -len(item[0])):
        if key.endswith(" " + suffix):
            base = key[: -(len(suffix) + 1)].rstrip()
            if base in _SAMPLERS_FOLDED:
                return _SAMPLERS_FOLDED[base], found
    raise UnknownSamplerError(name, _close_matches(name, [s.name for s in SAMPLERS], _SAMPLERS_FOLDED))


def effective_scheduler(sampler: SamplerInfo, scheduler: SchedulerInfo) -> SchedulerInfo:
    """The schedule actually used: Automatic becomes the sampler's default schedule when it has one.

    Its label is what A1111 writes as "Schedule type" for k-diffusion samplers (e.g. "Karras" for DPM++ 2M).
    Timestep samplers (DDIM, PLMS, UniPC) ignore the schedule; for them the scheduler is returned unchanged.
    """
    default = sampler.default_scheduler
    if scheduler.name == "automatic" and default is not None:
        return _SCHEDULERS_EXACT[default]
    return scheduler


def _close_matches(name: str, display: list[str], folded: Mapping[str, object]) -> list[str]:
    """Display names (or aliases) close to ``name``, best first."""
    candidates = {key: key for key in folded}
    candidates.update({entry.casefold(): entry for entry in display})
    matches = difflib.get_close_matches(name.strip().casefold(), list(candidates), n=3, cutoff=0.5)
    return [candidates[match] for match in matches]
