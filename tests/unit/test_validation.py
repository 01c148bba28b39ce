"""The edge checks of request bodies (sdfleet.validation): strict JSON, storable text, finite numbers in range,
bounded nesting — each problem a ValidationError naming the field."""

from __future__ import annotations

import math

import pytest

from sdfleet.api.errors import json_safe
from sdfleet.errors import ValidationError
from sdfleet.validation import INT64_MAX, check_text, check_tree, loads_json, text_problem


def _field_of(body: bytes, depth: int = 32) -> str | None:
    with pytest.raises(ValidationError) as caught:
        loads_json(body, max_depth=depth)
    return caught.value.field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rb'{"params": {"prompt": "\ud800"}}', "params.prompt"),  # a lone surrogate (a valid JSON escape)
        (rb'{"params": {"prompt": "a\udfffb"}}', "params.prompt"),
        (rb'{"labels": {"k": "a\u0000b"}}', "labels.k"),  # NUL
        (rb'{"labels": {"\ud800": "v"}}', "labels.\ud800"),  # in a key
        (rb'{"jobs": [{}, {}, {}, {"params": {"styles": ["ok", "\ud83d"]}}]}', "jobs.3.params.styles.1"),
        (b'{"params": {"eta": NaN}}', "params.eta"),
        (b'{"params": {"cfg_scale": Infinity}}', "params.cfg_scale"),
        (b'{"params": {"cfg_scale": -Infinity}}', "params.cfg_scale"),
        (b'{"params": {"cfg_scale": 1e999}}', "params.cfg_scale"),  # parses to inf
        (b'{"seed": 9223372036854775808}', "seed"),  # 2**63
        (b'{"seed": -9223372036854775809}', "seed"),
        (b'{"a": [[[[1]]]]}', "a.0.0.0"),  # depth 5 > 4
        (b"[" * 100_000 + b"]" * 100_000, "body"),  # deeper than the parser's recursion
        (b'{"prompt": "\xff\xfe"}', "body"),  # invalid UTF-8
        (b'{"prompt": "\xed\xa0\x80"}', "body"),  # a surrogate encoded as UTF-8 bytes
        (b"{not json", "body"),
        (b'{"n": ' + b"9" * 5000 + b"}", "body"),  # more digits than Python converts
    ],
)
def test_bad_bodies_are_refused_naming_the_field(body: bytes, field: str) -> None:
    assert _field_of(body, depth=4 if body.startswith(b'{"a"') else 32) == field


def test_good_bodies_pass_unchanged() -> None:
    body = '{"prompt": "a café 🦊 \\ud83e\\udd8a", "n": [1, 2.5, -3, true, null], "big": 9223372036854775807}'
    value = loads_json(body.encode(), max_depth=4)
    assert value == {"prompt": "a café 🦊 🦊", "n": [1, 2.5, -3, True, None], "big": INT64_MAX}
    assert loads_json(b'\xef\xbb\xbf{"a": 1}', max_depth=4) == {"a": 1}  # a UTF-8 byte order mark
    assert loads_json('{"a": "ü"}'.encode("utf-16"), max_depth=4) == {"a": "ü"}  # RFC 8259 detection
    assert loads_json(b"[[[1]]]", max_depth=3) == [[[1]]]


def test_text_checks() -> None:
    assert text_problem("plain") is None
    assert text_problem("emoji 🦊 and accents é") is None
    assert "NUL" in (text_problem("a\x00") or "")
    assert "surrogate" in (text_problem("\ud800") or "")
    with pytest.raises(ValidationError) as caught:
        check_text("x\x00", "idempotency_key")
    assert caught.value.field == "idempotency_key"


def test_numbers_and_booleans_in_trees() -> None:
    check_tree({"ok": [True, False, 0, -1, 1.5, INT64_MAX, -INT64_MAX - 1]}, max_depth=3)
    with pytest.raises(ValidationError, match="finite"):
        check_tree({"x": [math.nan]}, max_depth=3)


def test_error_bodies_can_always_be_rendered() -> None:
    """What A1111's 422 echoes (the input) may hold NaN or surrogates: made printable, never a 500."""
    safe = json_safe({"input": [math.nan, math.inf, "\ud800"], "loc": ("body", "cfg_scale")})
    assert safe == {"input": ["nan", "inf", "\\ud800"], "loc": ["body", "cfg_scale"]}


def test_a_worker_body_walks_its_values_unless_the_route_already_did() -> None:
    """One check per request: inside ``body_checked()`` (CheckedRoute walked the decoded body with the same
    rules) a worker body skips its own walk; anywhere else (the worker's client) it still refuses bad text."""
    from pydantic import ValidationError as PydanticValidationError

    from sdfleet.validation import body_checked, body_is_checked
    from sdfleet.wire import HeartbeatRequest

    bad = {"worker_id": "w\x00", "loaded_models": ["a\x00b"]}
    with pytest.raises(PydanticValidationError, match="NUL"):
        HeartbeatRequest.model_validate(bad)
    assert not body_is_checked()
    with body_checked():
        assert body_is_checked()
        assert HeartbeatRequest.model_validate(bad).worker_id == "w\x00"  # not walked twice
    assert not body_is_checked()  # the mark ends with the request
    with pytest.raises(PydanticValidationError, match="NUL"):
        HeartbeatRequest.model_validate(bad)
