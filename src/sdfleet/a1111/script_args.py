"""The positional arguments of A1111's selectable scripts (``script_args``), as each script's ``ui()`` orders
them: their description for ``/sdapi/v1/script-info`` (:class:`ArgSpec`), and the check of a request's values
(:func:`read_script_args`: A1111 fills the arguments a request leaves out with the UI's values; a value of the
wrong kind is a 422 naming ``script_args.N``). :class:`Variant` is one job of a script's batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sdfleet.errors import ValidationError

__all__ = ["ArgKind", "ArgSpec", "Variant", "arg_error", "read_script_args"]

ArgKind = Literal["bool", "int", "number", "choice", "text", "index", "multi", "file", "raw"]


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument of a script: its UI label, default, range or choices, and the kind of value it takes
    (``index``: a dropdown answering the index of its choice — an int, or here also the choice's text;
    ``multi``: a multiselect dropdown, a list of strings; ``file``: an upload, not usable from the API;
    ``raw``: passed to the script's runner as sent — its choices come from the registry)."""

    label: str
    value: Any
    kind: ArgKind
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None

    def as_api(self) -> dict[str, Any]:
        """The ``{label, value, minimum, maximum, step, choices}`` of ``/sdapi/v1/script-info``."""
        return {
            "label": self.label,
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "step": self.step,
            "choices": list(self.choices) if self.choices is not None else None,
        }


@dataclass(slots=True)
class Variant:
    """One job of a script's batch: the request fields it changes and the settings it overrides."""

    fields: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def arg_error(index: int, message: str) -> ValidationError:
    """A 422 naming the argument: ``script_args.N: …``."""
    return ValidationError(f"script_args.{index}: {message}", field=f"script_args.{index}")


def read_script_args(
    script: str, specs: Sequence[ArgSpec], given: Sequence[Any] | None
) -> tuple[list[Any], list[str]]:
    """The script's arguments: the request's values in order, the UI defaults for those it leaves out (as
    A1111's ``init_script_args`` does), each checked against its kind. Returns them and the notes (values past
    the script's last argument are ignored, as in A1111)."""
    values: list[Any] = []
    notes: list[str] = []
    given = list(given or [])
    for index, spec in enumerate(specs):
        default = list(spec.value) if isinstance(spec.value, tuple) else spec.value
        values.append(_check(index, spec, given[index] if index < len(given) else default))
    if len(given) > len(specs):
        notes.append(
            f"{script} takes {len(specs)} script_args; the other {len(given) - len(specs)} were ignored"
        )
    return values, notes


def _check(index: int, spec: ArgSpec, value: Any) -> Any:
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise arg_error(index, f"{spec.label} must be true or false")
    if spec.kind in ("int", "number"):
        number = _number(index, spec, value)
        _in_range(index, spec, number)
        return int(number) if spec.kind == "int" else float(number)
    if spec.kind == "choice":
        if not isinstance(value, str) or (spec.choices is not None and value not in spec.choices):
            raise arg_error(index, f"{spec.label} must be one of {', '.join(spec.choices or ())}")
        return value
    if spec.kind == "text":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise arg_error(index, f"{spec.label} must be a string")
        return value
    if spec.kind == "index":
        return _index(index, spec, value)
    if spec.kind == "multi":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise arg_error(index, f"{spec.label} must be a list of strings")
        if spec.choices and any(str(v) not in spec.choices for v in value):
            raise arg_error(index, f"{spec.label} takes only {', '.join(spec.choices)}")
        return [str(v) for v in value]
    if spec.kind == "raw":  # checked by the script's runner (a choice among the registry's models)
        return value
    return None  # an upload: the API cannot send one (A1111 reads the textbox instead)


def _number(index: int, spec: ArgSpec, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise arg_error(index, f"{spec.label} must be a number")
    if spec.kind == "int" and not float(value).is_integer():
        raise arg_error(index, f"{spec.label} must be an integer")
    return float(value)


def _in_range(index: int, spec: ArgSpec, number: float) -> None:
    low, high = spec.minimum, spec.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            bounds = f"between {low:g} and {high:g}"
        else:
            bounds = f"at least {low:g}" if low is not None else f"at most {high:g}"
        raise arg_error(index, f"{spec.label} is {number:g}, it must be {bounds}")


def _index(index: int, spec: ArgSpec, value: Any) -> int:
    choices = spec.choices or ()
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(choices):
            return value
        raise arg_error(index, f"{spec.label} {value} is not an index of its {len(choices)} choices")
    if isinstance(value, str):
        lowered = {choice.lower(): i for i, choice in enumerate(choices)}
        if value.strip().lower() in lowered:
            return lowered[value.strip().lower()]
        raise arg_error(index, f"{spec.label} {value!r} is not one of {', '.join(choices)}")
    if value is None:
        return 0  # A1111: ``x_type or 0``
    raise arg_error(index, f"{spec.label} must be the index (or the name) of one of its choices")
