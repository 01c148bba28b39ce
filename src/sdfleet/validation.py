"""Checks of request data at the edge, before anything is stored: the body is UTF-8 JSON, every string in it
is text the store, the JSON encoder and an HTTP header can hold (no unpaired UTF-16 surrogate such as
``"\\ud800"``, no NUL), every number is finite and fits a 64-bit integer, and nesting is bounded.

Python's ``json`` accepts all of these (``NaN``, ``Infinity``, ``1e999``, ``"\\ud800"``, ``"\\u0000"``) and
they then break whatever touches them later — the SQL store, the response encoder, a worker's claim. One
walk over the decoded body refuses them, naming the field (``jobs.3.params.prompt``) with a
:class:`~sdfleet.errors.ValidationError` (422). Pure: no web framework, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sdfleet.errors import ValidationError

__all__ = [
    "INT64_MAX",
    "body_checked",
    "body_is_checked",
    "check_text",
    "check_tree",
    "field_path",
    "loads_json",
    "text_problem",
]

INT64_MAX = 2**63 - 1
"""The largest integer a request may carry anywhere (the store's integer columns are 64-bit)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_BODY_CHECKED: ContextVar[bool] = ContextVar("sdfleet_body_checked", default=False)


@contextmanager
def body_checked() -> Iterator[None]:
    """Mark the request being handled in this context as having a body that :func:`loads_json` decoded and
    walked: body models (``wire.WorkerBody``) then skip their own walk of the same values, so a body is
    checked once, not twice. Only code that ran :func:`loads_json` on the very bytes being validated may
    enter it (``api.checked.CheckedRoute`` does)."""
    token = _BODY_CHECKED.set(True)
    try:
        yield
    finally:
        _BODY_CHECKED.reset(token)


def body_is_checked() -> bool:
    """True inside :func:`body_checked`: the values being validated have passed :func:`check_tree`."""
    return _BODY_CHECKED.get()


def field_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """``("jobs", 3, "params", "prompt")`` → ``"jobs.3.params.prompt"`` (the form every error uses)."""
    return ".".join(str(p) for p in parts) or "body"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii() and _SURROGATE.search(value):
        return "must be valid Unicode text (it holds an unpaired UTF-16 surrogate such as \\ud800)"
    return None


def check_text(value: str, field: str) -> str:
    """``value`` when it is storable text, else a 422 naming ``field``."""
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{field}: {problem}", field=field)
    return value


def _number_problem(value: float | int) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -INT64_MAX - 1 <= value <= INT64_MAX else "must fit a 64-bit integer"
    return None if math.isfinite(value) else "must be a finite number (not NaN or Infinity)"


def check_tree(value: Any, *, max_depth: int, prefix: tuple[str | int, ...] = ()) -> None:
    """Walk decoded JSON: every string (keys too) is text, every number finite and in range, nesting at most
    ``max_depth`` levels of arrays and objects. The first problem is a 422 naming its field."""
    path: list[str | int] = list(prefix)

    def fail(message: str) -> ValidationError:
        field = field_path(path)
        return ValidationError(f"{field}: {message}", field=field)

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, str):
            problem = text_problem(node)
            if problem is not None:
                raise fail(problem)
        elif isinstance(node, dict):
            if depth >= max_depth:
                raise fail(f"nested too deeply (the limit is {max_depth} levels)")
            for key, item in node.items():
                path.append(key)
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    raise fail(f"the key {problem}")
                walk(item, depth + 1)
                path.pop()
        elif isinstance(node, list):
            if depth >= max_depth:
                raise fail(f"nested too deeply (the limit is {max_depth} levels)")
            for index, item in enumerate(node):
                path.append(index)
                walk(item, depth + 1)
                path.pop()
        elif isinstance(node, int | float):
            problem = _number_problem(node)
            if problem is not None:
                raise fail(problem)

    walk(value, 0)


def loads_json(body: bytes, *, max_depth: int) -> Any:
    """Decode a request body as JSON and :func:`check_tree` it; every problem is a 422 on ``body`` (or on the
    field inside it): bytes that are not text in the JSON encoding (UTF-8, or UTF-16/32 as RFC 8259's
    detection finds it), invalid JSON, nesting deeper than ``max_depth``, bad strings or numbers."""
    try:
        text = body.decode(json.detect_encoding(body))  # strict: no invalid bytes, no encoded surrogates
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"the body is not valid UTF-8 text ({exc.reason} at byte {exc.start})", field="body"
        ) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc.msg}", field="body") from exc
    except RecursionError as exc:
        raise ValidationError(
            f"the body is nested too deeply (the limit is {max_depth} levels)", field="body"
        ) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ValidationError(f"the body is not valid JSON: {exc}", field="body") from exc
    check_tree(value, max_depth=max_depth)
    return value
