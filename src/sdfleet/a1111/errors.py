"""Errors raised by the A1111 format package.

Parsing prompts and infotexts never fails on malformed text (A1111 does not either); these errors are for
callers that ask for strictness, and for names that cannot be resolved.
"""

from __future__ import annotations

from collections.abc import Sequence


class A1111FormatError(ValueError):
    """Base class of every error raised by :mod:`sdfleet.a1111`."""


class PromptSyntaxError(A1111FormatError):
    """A prompt element that A1111 would only log and skip, reported because the caller asked to be strict."""


class InfotextError(A1111FormatError):
    """An infotext value that cannot be converted to the type of its field."""


class UnknownNameError(A1111FormatError):
    """A sampler or scheduler name that matches nothing; carries the closest known names."""

    kind = "name"

    def __init__(self, name: str, suggestions: Sequence[str]) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {self.kind} {name!r}{hint}")


class UnknownSamplerError(UnknownNameError):
    """A sampler name that is neither a sampler, an alias, nor a legacy "<sampler> <scheduler>" name."""

    kind = "sampler"


class UnknownSchedulerError(UnknownNameError):
    """A scheduler name that is neither a scheduler name, a label, nor an alias."""

    kind = "scheduler"
