"""The job system's pure decisions (sdfleet.jobs.policy): fencing of worker writes, the fate of a
failed attempt, and quarantine — no database."""

from __future__ import annotations

import pytest

from sdfleet.domain import Feature, Job, JobKind, JobState, Requirements
from sdfleet.jobs import policy
from sdfleet.jobs.policy import CountedFailure, PastFailure


def job(
    state: JobState = JobState.RUNNING, epoch: int = 3, worker: str | None = "w1", images: int = 1
) -> Job:
    return Job(
        id="j1",
        tenant="t1",
        kind=JobKind.TXT2IMG,
        state=state,
        spec={"batch_size": images},
        priority=0,
        created_at=0.0,
        updated_at=0.0,
        requirements=Requirements(kind=JobKind.TXT2IMG, arch=None, pixels=64 * 64, features=Feature.NONE),
        lease_epoch=epoch,
        lease_worker=worker,
    )


# ===================================================================== fencing


def test_only_the_holder_at_the_current_epoch_holds_an_unfinished_job() -> None:
    assert policy.holds(job(), "w1", 3)
    assert policy.holds(job(JobState.QUEUED), "w1", 3)  # lease ran out, nobody took it since
    assert not policy.holds(job(), "w2", 3)  # another worker (or tenant)
    assert not policy.holds(job(), "w1", 2)  # a stale epoch
    assert not policy.holds(job(JobState.SUCCEEDED), "w1", 3)  # accepted already: a duplicate
    assert not policy.holds(job(JobState.QUEUED, worker=None), "w1", 3)  # released / failed
    assert not policy.holds(None, "w1", 3)


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("outputs/t1/j1/3-0.png", policy.AttemptKey("outputs", "t1", "j1", 3, 0)),
        ("checkpoints/t1/j1/3-00000100.safetensors", policy.AttemptKey("checkpoints", "t1", "j1", 3, 100)),
        ("outputs/t1/j1/3-0", None),
        ("outputs/t1/j1/x-0.png", None),
        ("inputs/t1/abc.png", None),
        ("outputs/t1/j1/extra/3-0.png", None),
        ("outputs/t1/j1/3-99999999999999999999.png", None),
    ],
)
def test_attempt_keys_parse(key: str, parsed: policy.AttemptKey | None) -> None:
    assert policy.attempt_key(key) == parsed


def test_an_upload_is_allowed_only_at_the_jobs_current_held_epoch_under_its_own_key() -> None:
    key = policy.attempt_key
    assert policy.upload_allowed(key("outputs/t1/j1/3-0.png"), job())
    assert policy.upload_allowed(key("checkpoints/t1/j1/3-00000007.safetensors"), job())
    assert not policy.upload_allowed(key("outputs/t1/j1/2-0.png"), job())  # a stale epoch's URL
    assert not policy.upload_allowed(key("outputs/t2/j1/3-0.png"), job())  # another tenant's path
    assert not policy.upload_allowed(key("outputs/t1/j2/3-0.png"), job())  # another job
    assert not policy.upload_allowed(key("outputs/t1/j1/3-1.png"), job())  # no such output
    assert policy.upload_allowed(key("outputs/t1/j1/3-1.png"), job(images=2))
    assert not policy.upload_allowed(key("outputs/t1/j1/3-0.png"), job(JobState.SUCCEEDED))  # accepted
    assert not policy.upload_allowed(key("outputs/t1/j1/3-0.png"), job(JobState.QUEUED, worker=None))
    assert not policy.upload_allowed(None, job())
    assert not policy.upload_allowed(key("outputs/t1/j1/3-0.png"), None)


# ===================================================================== failures


def decide(
    code: str = "engine_error", message: str = "boom", *, retryable: bool = True, **kw: object
) -> policy.FailureDecision:
    values: dict[str, object] = {"worker_id": "w1", "failures": 0, "max_failures": 3, "history": ()}
    values.update(kw)
    return policy.decide_failure(code=code, message=message, retryable=retryable, **values)  # type: ignore[arg-type]


def test_an_input_error_fails_the_job_at_once_and_blames_no_worker() -> None:
    d = decide("invalid_input", "init_images: not a readable image", retryable=True)
    assert d.action == "fail" and d.code == "invalid_input" and not d.blames_worker
    assert "init_images" in d.message


def test_a_retryable_failure_requeues_within_the_budget_and_blames_the_worker() -> None:
    d = decide()
    assert d.action == "requeue" and d.blames_worker
    last = decide(failures=2)
    assert last.action == "fail" and last.blames_worker and "failed 3 times" in last.message
    fatal = decide(retryable=False)
    assert fatal.action == "fail" and fatal.blames_worker and "not retryable" in fatal.message


def test_the_same_failure_on_two_distinct_workers_fails_the_job_and_absolves_both() -> None:
    history = [PastFailure("w0", "engine_error", "RuntimeError: bad tensor at 0x7f3a9c001234 (call 17)")]
    d = decide(message="RuntimeError: bad tensor at 0x7f00deadbeef (call 3)", history=history)
    assert d.action == "fail" and not d.blames_worker
    assert d.absolve == frozenset({"w0", "w1"})
    assert "the same way on 2 workers" in d.message


def test_different_failures_or_the_same_worker_do_not_count_as_the_same() -> None:
    assert decide(history=[PastFailure("w0", "engine_error", "disk full")]).action == "requeue"
    assert decide(history=[PastFailure("w0", "model_unavailable", "boom")]).action == "requeue"
    assert decide(history=[PastFailure("w1", "engine_error", "boom")]).action == "requeue"  # itself


def test_infrastructure_failures_never_count_as_the_jobs_fault() -> None:
    history = [PastFailure("w0", "input_unavailable", "could not fetch the job's input images")]
    d = decide("input_unavailable", "could not fetch the job's input images", history=history)
    assert d.action == "requeue" and d.blames_worker


def test_failure_signature_blanks_numbers_and_addresses_only() -> None:
    sig = policy.failure_signature
    assert sig("e", "OOM: 2.00 GiB at 0xdeadbeef") == sig("e", "oom: 3.5 GiB at 0x12ab")
    assert sig("e", "disk full") != sig("e", "driver crashed")
    assert sig("a", "x") != sig("b", "x")


# ===================================================================== quarantine


def test_quarantine_counts_distinct_blamed_jobs_only() -> None:
    three = [
        CountedFailure("j1", "engine_error"),
        CountedFailure("j2", "engine_error"),
        CountedFailure("j3", "x"),
    ]
    assert policy.should_quarantine(three, 3)
    assert not policy.should_quarantine(
        [*three[:2], CountedFailure("j1", "engine_error")], 3
    )  # same job twice
    inputs = [*three[:2], CountedFailure("j3", "invalid_input")]
    assert not policy.should_quarantine(inputs, 3)  # the input's fault
    refunded = [*three[:2], CountedFailure("j3", "engine_error", refunded=True)]
    assert not policy.should_quarantine(refunded, 3)
    assert policy.blamed_jobs(inputs) == {"j1", "j2"}


# ===================================================================== JobPolicy: the numbers, built once


def test_the_policy_is_built_once_from_the_settings_and_frozen() -> None:
    from dataclasses import FrozenInstanceError

    from sdfleet.config import Settings

    p = policy.JobPolicy.from_settings(
        Settings(max_failures=5, max_interruptions=2, quarantine_failures=4, unservable_after=30.0)
    )
    assert (p.max_failures, p.max_interruptions, p.quarantine_failures, p.unservable_after) == (5, 2, 4, 30.0)
    with pytest.raises(FrozenInstanceError):
        p.max_failures = 9  # type: ignore[misc]


def test_the_retry_budget_requeues_until_the_last_allowed_failure() -> None:
    p = policy.JobPolicy(max_failures=3)
    fates = [
        p.after_failure(worker_id=f"w{n}", code="oom", message="boom", retryable=True, failures=n).action
        for n in range(4)
    ]
    assert fates == ["requeue", "requeue", "fail", "fail"]
    last = p.after_failure(worker_id="w2", code="oom", message="boom", retryable=True, failures=2)
    assert last.message == "boom (failed 3 times)" and last.blames_worker
    assert (
        policy.JobPolicy(max_failures=10)
        .after_failure(worker_id="w", code="oom", message="boom", retryable=False, failures=0)
        .message
        == "boom (not retryable)"
    )


def test_the_interruption_cap_is_its_own_budget_and_a_cancel_wins() -> None:
    p = policy.JobPolicy(max_interruptions=2, max_failures=1)
    first = p.after_interruption(interruptions=0, cancel_requested=False, reason="lease expired")
    assert (first.action, first.interruptions) == ("requeue", 1)
    assert p.after_interruption(interruptions=1, cancel_requested=False, reason="x").action == "requeue"
    over = p.after_interruption(interruptions=2, cancel_requested=False, reason="released by w")
    assert (over.action, over.interruptions) == ("fail", 3)
    assert over.message == "interrupted 3 times; last: released by w"
    assert p.after_interruption(interruptions=5, cancel_requested=True, reason="x").action == "cancel"


def test_the_quarantine_verdict_needs_the_threshold_of_distinct_blamed_jobs() -> None:
    p = policy.JobPolicy(quarantine_failures=2, quarantine_window=600)
    same_job = [CountedFailure("j1", "oom"), CountedFailure("j1", "oom")]
    assert p.quarantine_verdict(same_job, "boom") is None
    refunded = [CountedFailure("j1", "oom"), CountedFailure("j2", "oom", refunded=True)]
    assert p.quarantine_verdict(refunded, "boom") is None
    verdict = p.quarantine_verdict([CountedFailure("j1", "oom"), CountedFailure("j2", "nan")], "nan loss")
    assert verdict is not None and verdict.jobs == {"j1", "j2"}
    assert verdict.reason == "failed 2 distinct jobs within 600 s; last error: nan loss"


def test_unservable_reasons_name_what_every_online_worker_lacks() -> None:
    from sdfleet.domain import Capabilities, WorkerInfo, WorkerState

    def online(caps: Capabilities) -> WorkerInfo:
        return WorkerInfo("w", "w", "t", WorkerState.ACTIVE, caps, "", 0, 0.0, "", "", 0.0, 0.0)

    sdxl = Requirements(kind=JobKind.TXT2IMG, arch="sdxl", pixels=1024 * 1024, features=Feature.NONE)
    assert policy.why_unservable(sdxl, []) == "no worker is online"
    assert policy.why_unservable(sdxl, [online(Capabilities())]) is None
    why = policy.why_unservable(sdxl, [online(Capabilities(archs=("sd1",)))])
    assert why is not None and why.startswith(
        policy.UNSERVABLE_PREFIX + " online can take it (txt2img SDXL-capable"
    )
    assert "every worker" in why
    assert policy.JobPolicy(unservable_after=60).expires(61) and not policy.JobPolicy(
        unservable_after=60
    ).expires(60)
