"""Quota arithmetic and pricing (sdfleet.jobs.quotas), pure."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdfleet.config import Quotas
from sdfleet.domain import JobKind
from sdfleet.jobs.quotas import (
    MIN_HISTORY,
    Pricing,
    check_override,
    effective_limits,
    rate_limit_headers,
    refilled,
    seconds_until,
    work_units,
)


def test_overrides_replace_defaults_and_none_is_unlimited() -> None:
    limits = effective_limits(Quotas(rate=10, burst=100), {"rate": None, "max_concurrent": 7, "junk": 1})
    assert limits.rate is None and limits.burst == 100 and limits.max_concurrent == 7
    assert set(limits.overrides) == {"rate", "max_concurrent"}
    assert effective_limits(Quotas(), {}, weight=3.0).weight == 3.0


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("rate", -1, "greater than 0"),
        ("burst", 0.5, "greater than 1"),
        ("burst", None, "cannot be unlimited"),
        ("weight", None, "cannot be unlimited"),
        ("weight", 5000, "at most 1000"),
        ("rate", math.inf, "finite"),
        ("rate", True, "finite"),
        ("max_concurrent", 2.5, "whole number"),
        ("nope", 1, "unknown limit"),
    ],
)
def test_bad_overrides_say_why(name: str, value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_override(name, value)


def test_work_units_count_pixels_images_steps_and_hires() -> None:
    plain = {"width": 512, "height": 512, "steps": 20, "batch_size": 2, "n_iter": 3}
    assert work_units(JobKind.TXT2IMG, plain) == pytest.approx(512 * 512 * 6 * 20 / 1e6)
    hires = {**plain, "enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 10}
    assert work_units(JobKind.TXT2IMG, hires) == pytest.approx(
        (512 * 512 * 6 * 20 + 1024 * 1024 * 6 * 10) / 1e6
    )
    assert work_units(JobKind.IMG2IMG, {**plain, "denoising_strength": 0.5}) == pytest.approx(
        work_units(JobKind.TXT2IMG, plain) / 2
    )
    train = {"resolution": 256, "batch_size": 2, "steps": 100}
    assert work_units(JobKind.TRAIN_LORA, train) == pytest.approx(256 * 256 * 2 * 100 / 1e6)


def test_pricing_learns_per_kind_and_checkpoint_after_enough_history() -> None:
    spec = {"width": 1000, "height": 1000, "steps": 10}  # 10 megapixel-steps
    defaults = Quotas(default_seconds_per_mpix_step=0.5)
    few = Pricing.from_history(defaults, [("txt2img", "m", spec, 1.0)] * (MIN_HISTORY - 1))
    assert few.estimate(JobKind.TXT2IMG, "m", spec) == pytest.approx(5.0)  # the default until history
    enough = Pricing.from_history(
        defaults, [("txt2img", "m", spec, 1.0)] * MIN_HISTORY + [("txt2img", "m", spec, float("nan"))]
    )
    assert enough.estimate(JobKind.TXT2IMG, "m", spec) == pytest.approx(1.0)
    assert enough.estimate(JobKind.TXT2IMG, "other", spec) == pytest.approx(5.0)


@given(
    tokens=st.none() | st.floats(-10, 1000),
    elapsed=st.floats(-100, 1e6),
    rate=st.floats(0.001, 1000),
    cap=st.floats(1, 1e6),
)
def test_refill_never_exceeds_the_cap_and_never_drains(
    tokens: float | None, elapsed: float, rate: float, cap: float
) -> None:
    now = 1000.0
    have = refilled(tokens, now - elapsed, rate, cap, now)
    assert have <= cap
    if tokens is not None:
        assert have >= min(tokens, cap)  # a clock running backwards takes nothing away


def test_wait_and_headers() -> None:
    assert seconds_until(2.0, 5.0, 0.5) == pytest.approx(6.0)
    headers = rate_limit_headers(10, 2.4, 15.2, 0.3)
    assert headers == {
        "Retry-After": "1",
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "2",
        "RateLimit-Reset": "16",
    }
