"""Tests for the A1111 sampler and scheduler tables and name resolution."""

from __future__ import annotations

import pytest

from sdfleet.a1111 import (
    LEGACY_SAMPLER_NAMES,
    SAMPLERS,
    SCHEDULERS,
    UnknownSamplerError,
    UnknownSchedulerError,
    effective_scheduler,
    get_hr_sampler_and_scheduler,
    get_sampler_and_scheduler,
    resolve_sampler,
    resolve_scheduler,
    sampler_by_name,
    scheduler_by_name,
)

A1111_110_SAMPLERS = [
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
]


def test_sampler_table_matches_a1111_110() -> None:
    assert [sampler.name for sampler in SAMPLERS] == A1111_110_SAMPLERS
    assert sampler_by_name("Euler a").aliases == ("k_euler_a", "k_euler_ancestral")
    assert sampler_by_name("DPM++ 2M SDE").aliases == ("k_dpmpp_2m_sde",)
    assert sampler_by_name("LCM").aliases == ("k_lcm",)


def test_scheduler_table_matches_a1111_110() -> None:
    assert [(s.name, s.label) for s in SCHEDULERS] == [
        ("automatic", "Automatic"),
        ("uniform", "Uniform"),
        ("karras", "Karras"),
        ("exponential", "Exponential"),
        ("polyexponential", "Polyexponential"),
        ("sgm_uniform", "SGM Uniform"),
        ("kl_optimal", "KL Optimal"),
        ("align_your_steps", "Align Your Steps"),
        ("simple", "Simple"),
        ("normal", "Normal"),
        ("ddim", "DDIM"),
        ("beta", "Beta"),
    ]
    assert scheduler_by_name("SGM Uniform").aliases == ("SGMUniform",)
    assert scheduler_by_name("karras").default_rho == 7.0


def test_api_shapes() -> None:
    assert sampler_by_name("DPM++ SDE").as_api() == {
        "name": "DPM++ SDE",
        "aliases": ["k_dpmpp_sde"],
        "options": {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
    }
    assert scheduler_by_name("karras").as_api() == {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    }
    assert scheduler_by_name("sgm_uniform").as_api()["aliases"] == ["SGMUniform"]


def test_sampler_options() -> None:
    heun, dpm2m, euler_a = sampler_by_name("Heun"), sampler_by_name("DPM++ 2M"), sampler_by_name("Euler a")
    assert heun.second_order and heun.total_steps(20) == 40
    assert not dpm2m.second_order and dpm2m.total_steps(20) == 20
    assert dpm2m.default_scheduler == "karras"
    assert euler_a.default_scheduler is None
    assert euler_a.uses_ensd
    assert sampler_by_name("DPM++ 3M SDE").options["discard_next_to_last_sigma"] is True
    assert sampler_by_name("DPM++ 2M SDE Heun").options["solver_type"] == "heun"


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic")),
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Automatic")),
        ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential")),
        ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Automatic")),
        ("DPM++ 2M SDE Heun Karras", "Uniform", ("DPM++ 2M SDE Heun", "Karras")),
        ("Euler a", "karras", ("Euler a", "Karras")),
        ("Euler a", "KARRAS", ("Euler a", "Automatic")),
        # A1111 checks " Uniform" before " SGM Uniform", leaving the unknown sampler "Euler SGM"
        ("Euler SGM Uniform", None, ("DPM++ 2M", "Uniform")),
        ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
        ("Euler sgm_uniform", None, ("Euler", "SGM Uniform")),
        ("LMS Karras", None, ("LMS", "Karras")),
        ("DDIM", None, ("DDIM", "Automatic")),
        ("DDIM CFG++", "DDIM", ("DDIM CFG++", "DDIM")),
        # unknown samplers silently become the first one; aliases are not resolved here
        ("no such sampler", None, ("DPM++ 2M", "Automatic")),
        ("k_euler_a", None, ("DPM++ 2M", "Automatic")),
        (None, None, ("DPM++ 2M", "Automatic")),
        ("", "Beta", ("DPM++ 2M", "Beta")),
    ],
)
def test_get_sampler_and_scheduler_matches_a1111(
    sampler: str | None, scheduler: str | None, expected: tuple[str, str]
) -> None:
    assert get_sampler_and_scheduler(sampler, scheduler) == expected


def test_get_sampler_and_scheduler_without_automatic_conversion() -> None:
    assert get_sampler_and_scheduler("DPM++ 2M Karras", None, convert_automatic=False) == (
        "DPM++ 2M",
        "Karras",
    )


def test_hires_sampler_from_infotext() -> None:
    first = {"Sampler": "DPM++ 2M", "Schedule type": "Karras"}
    assert get_hr_sampler_and_scheduler(first) == ("Use same sampler", "Automatic")
    assert get_hr_sampler_and_scheduler({"Sampler": "Euler", "Schedule type": "Automatic"}) == (
        "Use same sampler",
        "Use same scheduler",
    )
    assert get_hr_sampler_and_scheduler({**first, "Hires sampler": "Euler a"}) == (
        "Euler a",
        "Use same scheduler",
    )
    assert get_hr_sampler_and_scheduler({**first, "Hires schedule type": "Exponential"}) == (
        "Use same sampler",
        "Exponential",
    )


@pytest.mark.parametrize(
    ("name", "scheduler", "expected"),
    [
        ("Euler a", None, ("Euler a", "automatic")),
        ("euler A", "KARRAS", ("Euler a", "karras")),
        ("k_euler_ancestral", "sgmuniform", ("Euler a", "sgm_uniform")),
        ("k_dpmpp_2m", "Align Your Steps", ("DPM++ 2M", "align_your_steps")),
        ("dpm++ 2m karras", None, ("DPM++ 2M", "karras")),
        ("DPM++ 2M SDE Heun Exponential", None, ("DPM++ 2M SDE Heun", "exponential")),
        ("Euler SGM Uniform", "karras", ("Euler", "sgm_uniform")),
        ("k_dpmpp_2m_ka", None, ("DPM++ 2M", "karras")),
        ("K_DPMPP_SDE_KA", None, ("DPM++ SDE", "karras")),
        ("k_dpmpp_3m_sde_exp", None, ("DPM++ 3M SDE", "exponential")),
        ("  UniPC ", "", ("UniPC", "automatic")),
        ("ddim", "ddim", ("DDIM", "ddim")),
    ],
)
def test_resolve_sampler_is_case_insensitive_and_knows_aliases(
    name: str, scheduler: str | None, expected: tuple[str, str]
) -> None:
    sampler_info, scheduler_info = resolve_sampler(name, scheduler)
    assert (sampler_info.name, scheduler_info.name) == expected


def test_every_name_and_alias_resolves_to_itself() -> None:
    for sampler in SAMPLERS:
        for name in (sampler.name, *sampler.aliases):
            assert resolve_sampler(name)[0] is sampler
            assert resolve_sampler(name.upper())[0] is sampler
    for alias, (sampler_name, scheduler_name) in LEGACY_SAMPLER_NAMES.items():
        assert (resolve_sampler(alias)[0].name, resolve_sampler(alias)[1].name) == (
            sampler_name,
            scheduler_name,
        )
    for scheduler in SCHEDULERS:
        for name in (scheduler.name, scheduler.label, *scheduler.aliases):
            assert resolve_scheduler(name) is scheduler


def test_unknown_sampler_lists_close_matches() -> None:
    with pytest.raises(UnknownSamplerError) as excinfo:
        resolve_sampler("Euler aa")
    assert excinfo.value.name == "Euler aa"
    assert "Euler a" in excinfo.value.suggestions
    assert "unknown sampler 'Euler aa'; did you mean 'Euler a'" in str(excinfo.value)
    with pytest.raises(UnknownSamplerError, match="DPM\\+\\+ 2M"):
        resolve_sampler("DPM++ 2M Karass")
    with pytest.raises(UnknownSamplerError) as nothing_close:
        resolve_sampler("zzzzzzzz")
    assert nothing_close.value.suggestions == ()
    assert str(nothing_close.value) == "unknown sampler 'zzzzzzzz'"


def test_unknown_scheduler_lists_close_matches() -> None:
    with pytest.raises(UnknownSchedulerError) as excinfo:
        resolve_scheduler("karas")
    assert excinfo.value.suggestions[0] == "Karras"
    with pytest.raises(UnknownSchedulerError):
        resolve_sampler("Euler", "cosine")
    assert resolve_scheduler(None).name == "automatic"


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M", "automatic", "Karras"),
        ("DPM++ 2M SDE", "automatic", "Exponential"),
        ("DPM++ 2M", "uniform", "Uniform"),
        ("Euler", "automatic", "Automatic"),
        ("Euler", "karras", "Karras"),
        ("DDIM", "automatic", "Automatic"),
    ],
)
def test_effective_scheduler_gives_the_infotext_schedule_type(
    sampler: str, scheduler: str, expected: str
) -> None:
    assert effective_scheduler(sampler_by_name(sampler), scheduler_by_name(scheduler)).label == expected


def test_diffusers_hints() -> None:
    dpm2m = sampler_by_name("DPM++ 2M").diffusers
    assert dpm2m.class_name == "DPMSolverMultistepScheduler"
    assert dpm2m.kwargs == {"algorithm_type": "dpmsolver++", "solver_order": 2}
    assert dpm2m.exact
    sde = sampler_by_name("DPM++ 2M SDE").diffusers
    assert sde.kwargs["algorithm_type"] == "sde-dpmsolver++"
    assert not sde.exact and sde.note
    assert sampler_by_name("Euler a").diffusers.class_name == "EulerAncestralDiscreteScheduler"
    assert scheduler_by_name("karras").diffusers.kwargs == {"use_karras_sigmas": True}
    assert scheduler_by_name("sgm_uniform").diffusers.kwargs == {"timestep_spacing": "trailing"}
    assert all(sampler.diffusers.class_name for sampler in SAMPLERS)
    assert all(sampler.diffusers.exact or sampler.diffusers.note for sampler in SAMPLERS)
    assert all(scheduler.diffusers.exact or scheduler.diffusers.note for scheduler in SCHEDULERS)
