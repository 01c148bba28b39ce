"""The AUTOMATIC1111 prompt language, parsed the way A1111 1.10 parses it.

A1111 processes a positive prompt in this order, and :func:`parse_prompt` does the same:

1. strip ``#`` comments (:func:`strip_comments`);
2. remove extra-network tags such as ``<lora:name:0.8>`` (:func:`extract_extra_networks`);
3. split on ``AND`` into weighted sub-prompts for composable diffusion (:func:`split_and`);
4. expand prompt editing ``[from:to:when]`` and alternation ``[a|b]`` into a per-step schedule of plain
   texts (:func:`prompt_schedules`);
5. turn each scheduled text into ``(text, weight)`` fragments from ``(…)``, ``[…]``, ``(…:w)`` and escapes
   (:func:`parse_prompt_attention`), cut into chunks at ``BREAK``.

Nothing here raises on malformed input: unbalanced brackets, bad weights and stray characters are read the
way A1111 reads them (a prompt-editing expression that does not parse is kept verbatim). Step numbers follow
A1111: a schedule entry is used while the sampler's step counter (which starts at 0) is ``<= end_step``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sdfleet.a1111.errors import PromptSyntaxError

__all__ = [
    "LORA_KINDS",
    "MAX_WEIGHT",
    "Chunk",
    "ExtraNetworkTag",
    "HypernetTag",
    "LoraTag",
    "PromptSchedule",
    "ScheduledPrompt",
    "StepRange",
    "SubPrompt",
    "WeightedText",
    "extract_extra_networks",
    "make_extra_network_tag",
    "parse_prompt",
    "parse_prompt_attention",
    "prompt_schedules",
    "split_and",
    "split_chunks",
    "strip_comments",
]

WeightedText = tuple[str, float]
"""A piece of prompt text and its attention weight; ``("BREAK", -1.0)`` marks a chunk break."""

Chunk = tuple[WeightedText, ...]
"""The weighted fragments between two ``BREAK`` markers."""

LORA_KINDS = frozenset({"lora", "lyco"})
"""Extra-network kinds handled by A1111's built-in Lora extension (``lyco`` is an alias of ``lora``)."""

_BREAK_MARKER: WeightedText = ("BREAK", -1.0)
_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1
MAX_WEIGHT = 1e6
"""Attention and ``AND`` weights are clamped to ``[-MAX_WEIGHT, MAX_WEIGHT]``: a weight of hundreds of digits, or
weights nested until their product overflows, would otherwise be infinite (A1111 then renders NaN noise)."""


def _clamp(weight: float) -> float:
    return max(-MAX_WEIGHT, min(MAX_WEIGHT, weight))


# --------------------------------------------------------------------------------------------------------------
# Comments and extra networks
# --------------------------------------------------------------------------------------------------------------

_WHOLE_LINE_COMMENT = re.compile(r"(^|\n)#[^\n]*(\n|$)")
_TRAILING_COMMENT = re.compile(r"#[^\n]*(\n|$)")


def strip_comments(text: str) -> str:
    """Remove ``#`` comments as A1111's ``enable_prompt_comments`` setting (on by default) does.

    A line that starts with ``#`` and the rest of any line after a ``#`` are replaced by a newline.
    """
    text = _WHOLE_LINE_COMMENT.sub("\n", text)
    return _TRAILING_COMMENT.sub("\n", text)


_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True, slots=True)
class ExtraNetworkTag:
    """An extra-network tag ``<kind:arg1:arg2…>`` taken out of a prompt.

    ``args`` are the ``:``-separated items after the kind, as written. An item of the form ``key=value`` is a
    named argument; every other item is positional.
    """

    kind: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        """The first argument: the network's name."""
        return self.args[0]

    @property
    def positional(self) -> tuple[str, ...]:
        """Items that are not ``key=value``."""
        return tuple(item for item in self.args if _named_split(item) is None)

    @property
    def named(self) -> dict[str, str]:
        """Items of the form ``key=value``; a later duplicate key wins, as in A1111."""
        pairs = (_named_split(item) for item in self.args)
        return dict(pair for pair in pairs if pair is not None)

    @property
    def text(self) -> str:
        """The tag as it appeared in the prompt."""
        return f"<{self.kind}:{':'.join(self.args)}>"


@dataclass(frozen=True, slots=True)
class LoraTag(ExtraNetworkTag):
    """``<lora:name[:te_weight[:unet_weight[:dyn_dim]]]>``; also ``te=``, ``unet=`` and ``dyn=`` named arguments.

    The text-encoder weight defaults to 1.0 and the UNet weight to the text-encoder weight.
    """

    te_weight: float
    unet_weight: float
    dyn_dim: int | None = None


@dataclass(frozen=True, slots=True)
class HypernetTag(ExtraNetworkTag):
    """``<hypernet:name[:multiplier]>``; the multiplier defaults to 1.0."""

    multiplier: float


def _named_split(item: str) -> tuple[str, str] | None:
    # A1111 splits with maxsplit=2 and only accepts exactly two parts, so "a=b=c" stays positional.
    parts = item.split("=", 2)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def make_extra_network_tag(kind: str, args: Sequence[str]) -> ExtraNetworkTag:
    """Build the typed tag for ``kind``: :class:`LoraTag`, :class:`HypernetTag` or a plain :class:`ExtraNetworkTag`.

    Numbers are read with Python's ``float``/``int``, as A1111 does. Raises :class:`PromptSyntaxError` when a
    Lora or hypernetwork argument is not a number (A1111 logs that and activates none of the networks).
    """
    tag = ExtraNetworkTag(kind, tuple(args))
    try:
        if kind in LORA_KINDS:
            positional, named = tag.positional, tag.named
            te_weight = float(positional[1]) if len(positional) > 1 else 1.0
            te_weight = float(named.get("te", te_weight))
            unet_weight = float(positional[2]) if len(positional) > 2 else te_weight
            unet_weight = float(named.get("unet", unet_weight))
            dyn_dim = int(positional[3]) if len(positional) > 3 else None
            dyn_dim = int(named["dyn"]) if "dyn" in named else dyn_dim
            return LoraTag(kind, tag.args, te_weight, unet_weight, dyn_dim)
        if kind == "hypernet":
            multiplier = float(tag.args[1]) if len(tag.args) > 1 else 1.0
            return HypernetTag(kind, tag.args, multiplier)
    except (ValueError, IndexError) as exc:
        raise PromptSyntaxError(f"bad arguments in {tag.text}: {exc}") from exc
    return tag


def extract_extra_networks(text: str, *, strict: bool = False) -> tuple[str, list[ExtraNetworkTag]]:
    """Remove every ``<kind:args>`` tag from ``text`` and return the text and the tags in order.

    Removing a tag leaves nothing behind (not even a space). A Lora or hypernetwork tag whose numbers do not
    parse is returned as a plain :class:`ExtraNetworkTag`, or raises :class:`PromptSyntaxError` when
    ``strict`` is true.
    """
    tags: list[ExtraNetworkTag] = []

    def take(match: re.Match[str]) -> str:
        kind, args = match.group(1), match.group(2).split(":")
        try:
            tags.append(make_extra_network_tag(kind, args))
        except PromptSyntaxError:
            if strict:
                raise
            tags.append(ExtraNetworkTag(kind, tuple(args)))
        return ""

    return _EXTRA_NETWORK.sub(take, text), tags


# --------------------------------------------------------------------------------------------------------------
# AND: composable diffusion
# --------------------------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*\Z", re.DOTALL)


def split_and(text: str) -> list[tuple[str, float]]:
    """Split a prompt on the word ``AND`` into ``(sub_prompt, weight)`` pairs.

    A sub-prompt may end in ``:weight`` (default 1.0); that suffix and trailing whitespace are removed, leading
    whitespace is kept.
    """
    result: list[tuple[str, float]] = []
    for part in _AND.split(text):
        match = _SUBPROMPT_WEIGHT.match(part)
        if match is None:  # pragma: no cover - the pattern matches every string
            result.append((part, 1.0))
            continue
        weight = match.group(2)
        result.append((match.group(1), _clamp(float(weight)) if weight is not None else 1.0))
    return result


# --------------------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# --------------------------------------------------------------------------------------------------------------
#
# A1111 parses these with a lark grammar (Earley):
#
#   start: (prompt | /[][():]/+)*                 -- stray brackets and colons are allowed at the top level only
#   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
#   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"     -- kept verbatim
#   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
#   alternate: "[" prompt ("|" [prompt])+ "]"
#   plain: ([^\\[]():|] | \\.)+
#
# and uses the whole prompt verbatim when it does not parse. A nested construct has at most one parse, so a
# recursive descent with memoised constructs reproduces it; at the top level a bracket that starts a valid
# construct is read as that construct, otherwise as a stray character. (When a construct is directly followed
# by a stray bracket or colon, as in "[a:3])", both readings are valid and lark's pick depends on Python's
# per-process hash seed; we always read the construct, which is one of A1111's answers.)

_SIGNED_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)
_PLAIN_RUN = re.compile(r"[^\\\[\]():|]+")
_WHITESPACE = re.compile(r"\s*")
_MAX_NESTING = 100  # deeper prompts are kept verbatim (A1111 would hit Python's recursion limit)


@dataclass(frozen=True, slots=True)
class _Scheduled:
    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    when: str


@dataclass(frozen=True, slots=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Scheduled | _Alternate
_Nodes = tuple[_Node, ...]


class _TooDeep(Exception):
    pass


def _skip_whitespace(text: str, i: int) -> int:
    match = _WHITESPACE.match(text, i)
    return match.end() if match else i


class _ScheduleParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.constructs: dict[int, tuple[_Nodes, int] | None] = {}

    def parse(self) -> _Nodes | None:
        """The top-level sequence, or None when A1111's grammar rejects the prompt."""
        text, nodes, i = self.text, list[_Node](), 0
        try:
            while i < len(text):
                char = text[i]
                if char in "[(":
                    construct = self.construct(i, 0)
                    if construct is not None:
                        nodes.extend(construct[0])
                        i = construct[1]
                        continue
                    nodes.append(char)
                    i += 1
                elif char in ")]:":
                    nodes.append(char)
                    i += 1
                elif char == "|" or (char == "\\" and not self.is_escape(i)):
                    return None
                else:
                    i = self.plain(i, nodes)
        except _TooDeep:
            return None
        return tuple(nodes)

    def is_escape(self, i: int) -> bool:
        return i + 1 < len(self.text) and self.text[i + 1] != "\n"

    def plain(self, i: int, nodes: list[_Node]) -> int:
        """Append the plain text (with escapes) starting at ``i``; return where it ends."""
        text, start = self.text, i
        while i < len(text):
            run = _PLAIN_RUN.match(text, i)
            if run is not None:
                i = run.end()
            elif text[i] == "\\" and self.is_escape(i):
                i += 2
            else:
                break
        nodes.append(text[start:i])
        return i

    def prompt(self, i: int, depth: int) -> tuple[_Nodes, int] | None:
        """A nested ``prompt``: stops before ``)``, ``]``, ``:``, ``|`` or the end; None if a construct fails."""
        text, nodes = self.text, list[_Node]()
        while i < len(text):
            char = text[i]
            if char in ")]:|":
                break
            if char in "[(":
                construct = self.construct(i, depth)
                if construct is None:
                    return None
                nodes.extend(construct[0])
                i = construct[1]
            elif char == "\\" and not self.is_escape(i):
                return None
            else:
                i = self.plain(i, nodes)
        return tuple(nodes), i

    def construct(self, i: int, depth: int) -> tuple[_Nodes, int] | None:
        """The bracketed construct opening at ``i`` and the index after it, or None."""
        if depth > _MAX_NESTING:
            raise _TooDeep
        if i not in self.constructs:
            opener = self.text[i]
            self.constructs[i] = self.square(i, depth + 1) if opener == "[" else self.round(i, depth + 1)
        return self.constructs[i]

    def at(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def round(self, i: int, depth: int) -> tuple[_Nodes, int] | None:
        first = self.prompt(i + 1, depth)
        if first is None:
            return None
        inner, j = first
        if self.at(j) == ")":
            return ("(", *inner, ")"), j + 1
        if self.at(j) != ":":
            return None
        second = self.prompt(j + 1, depth)
        if second is None or self.at(second[1]) != ")":
            return None
        return ("(", *inner, ":", *second[0], ")"), second[1] + 1

    def square(self, i: int, depth: int) -> tuple[_Nodes, int] | None:
        first = self.prompt(i + 1, depth)
        if first is None:
            return None
        inner, j = first
        follower = self.at(j)
        if follower == "]":
            return ("[", *inner, "]"), j + 1
        if follower == "|":
            return self.alternate(inner, j, depth)
        if follower != ":":
            return None
        when = self.when(j + 1)
        if when is not None:
            return (_Scheduled(None, inner, when[0]),), when[1]
        second = self.prompt(j + 1, depth)
        if second is None or self.at(second[1]) != ":":
            return None
        when = self.when(second[1] + 1)
        if when is None:
            return None
        return (_Scheduled(inner, second[0], when[0]),), when[1]

    def alternate(self, first: _Nodes, j: int, depth: int) -> tuple[_Nodes, int] | None:
        options = [first]
        while self.at(j) == "|":
            option = self.prompt(j + 1, depth)
            if option is None:
                return None
            options.append(option[0])
            j = option[1]
        if self.at(j) != "]":
            return None
        return (_Alternate(tuple(options)),), j + 1

    def when(self, i: int) -> tuple[str, int] | None:
        """``[WHITESPACE] NUMBER [WHITESPACE] "]"`` at ``i``: the number's text and the index after ``]``."""
        number = _SIGNED_NUMBER.match(self.text, _skip_whitespace(self.text, i))
        if number is None:
            return None
        end = _skip_whitespace(self.text, number.end())
        if self.at(end) != "]":
            return None
        return number.group(), end + 1


@dataclass(frozen=True, slots=True)
class _StepScale:
    """How a ``when`` number becomes a step: A1111's ``get_learned_conditioning_prompt_schedules`` rules."""

    steps: int
    int_offset: int
    float_offset: float
    old_scheduling: bool

    def step_of(self, number: str) -> int:
        value = float(number)
        if self.old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in number:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        # A1111 computes min(steps, int(value)), which raises for the infinities handled here.
        if math.isnan(value):  # only from 0 * inf, with steps == 0
            return 0
        if value >= self.steps:
            return self.steps
        if math.isinf(value):  # -inf: before every step
            return -(2**63)
        return int(value)


def _walk(nodes: _Nodes) -> Iterator[_Scheduled | _Alternate]:
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            if node.before is not None:
                yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: _Nodes, step: int, scale: _StepScale, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            if step <= scale.step_of(node.when):
                if node.before is not None:
                    _render(node.before, step, scale, out)
            else:
                _render(node.after, step, scale, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, scale, out)


def prompt_schedules(
    text: str, steps: int, *, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """Expand prompt editing and alternation into ``[(end_step, text), …]``, like A1111.

    ``[from:to:when]`` uses ``from`` while the step is ``<= when`` and ``to`` after; ``[to:when]`` and
    ``[from::when]`` add or remove text. ``when`` with a decimal point is a fraction of ``steps``, otherwise a
    step number. ``[a|b|c]`` cycles every step. For a hires pass give ``hires_steps``: fractions then run from
    1.0 to 2.0 and step numbers continue after the first pass's ``steps``. ``use_old_scheduling`` selects the
    pre-1.6 rule (values below 1 are fractions). A prompt that does not parse is one entry, verbatim.

    >>> prompt_schedules("a [b:c:3] d", 10)
    [(3, 'a b d'), (10, 'a c d')]
    """
    if hires_steps is None or use_old_scheduling:
        scale = _StepScale(steps, 0, 0.0, use_old_scheduling)
    else:
        scale = _StepScale(hires_steps, steps, 1.0, False)

    tree = _ScheduleParser(text).parse()
    if tree is None:
        return [(scale.steps, text)]

    boundaries = {scale.steps}
    for node in _walk(tree):
        if isinstance(node, _Alternate):
            boundaries.update(range(1, scale.steps + 1))
        else:
            step = scale.step_of(node.when)
            if step >= 1:
                boundaries.add(step)

    schedule = []
    for step in sorted(boundaries):
        out: list[str] = []
        _render(tree, step, scale, out)
        schedule.append((step, "".join(out)))
    return schedule


# --------------------------------------------------------------------------------------------------------------
# Attention weights
# --------------------------------------------------------------------------------------------------------------

_ATTENTION_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]                            # escaped bracket or backslash: the character itself
    | \\                                      # any other backslash: dropped
    | [(\[]                                   # opening bracket
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)        # ':1.3)' closes a round bracket with an explicit weight
    | [)\]]                                   # closing bracket
    | [^\\()\[\]:]+                           # text
    | :                                       # a colon that is not part of a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


class _AttentionState:
    """A1111's ``parse_prompt_attention`` bookkeeping: fragments and the positions of open brackets."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.round: list[int] = []
        self.square: list[int] = []

    def append(self, text: str, weight: float = 1.0) -> None:
        self.texts.append(text)
        self.weights.append(weight)

    def multiply_from(self, start: int, multiplier: float) -> None:
        for index in range(start, len(self.weights)):
            self.weights[index] = _clamp(self.weights[index] * multiplier)

    def add_text(self, text: str) -> None:
        for index, part in enumerate(_BREAK.split(text)):
            if index:
                self.append(*_BREAK_MARKER)
            self.append(part)

    def close(self, bracket: str) -> None:
        if bracket == ")" and self.round:
            self.multiply_from(self.round.pop(), _ROUND_MULTIPLIER)
        elif bracket == "]" and self.square:
            self.multiply_from(self.square.pop(), _SQUARE_MULTIPLIER)
        else:
            self.add_text(bracket)

    def merged(self) -> list[WeightedText]:
        """The fragments with neighbours of equal weight joined; ``[("", 1.0)]`` when there are none."""
        merged: list[WeightedText] = []
        for text, weight in zip(self.texts, self.weights, strict=True):
            if merged and merged[-1][1] == weight:
                merged[-1] = (merged[-1][0] + text, weight)
            else:
                merged.append((text, weight))
        return merged or [("", 1.0)]


def parse_prompt_attention(text: str) -> list[WeightedText]:
    """Split a prompt into ``(text, weight)`` fragments exactly as A1111's ``parse_prompt_attention``.

    ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, ``(x:1.3)`` multiplies by 1.3; nesting multiplies.
    ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters and any other backslash is dropped.
    Unclosed brackets apply to the rest of the prompt; an unmatched closing bracket is text. ``BREAK`` yields
    ``("BREAK", -1.0)``. Neighbouring fragments of equal weight are merged, and an empty prompt gives
    ``[("", 1.0)]``.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    state = _AttentionState()
    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            state.append(token[1:])
        elif token == "(":
            state.round.append(len(state.texts))
        elif token == "[":
            state.square.append(len(state.texts))
        elif weight is not None and state.round:
            try:
                multiplier = float(weight)
            except ValueError:
                # A1111 raises here (e.g. "(a:1.2.3)"); read it as if ':' and the number were plain text.
                state.add_text(":")
                state.add_text(token[1:-1])
                state.close(")")
            else:
                state.multiply_from(state.round.pop(), multiplier)
        elif token in (")", "]"):
            state.close(token)
        else:
            state.add_text(token)

    for start in state.round:
        state.multiply_from(start, _ROUND_MULTIPLIER)
    for start in state.square:
        state.multiply_from(start, _SQUARE_MULTIPLIER)
    return state.merged()


def split_chunks(fragments: Iterable[WeightedText]) -> tuple[Chunk, ...]:
    """Cut attention fragments into chunks at ``("BREAK", -1.0)`` markers.

    Only a marker with weight exactly -1 is a break, as in A1111's tokenizer: a ``BREAK`` inside brackets has its
    weight multiplied and is therefore the plain word "BREAK". Empty fragments are dropped; a prompt always has at
    least one (possibly empty) chunk.
    """
    chunks: list[Chunk] = []
    current: list[WeightedText] = []
    for fragment in fragments:
        if fragment == _BREAK_MARKER:
            chunks.append(tuple(current))
            current = []
        elif fragment[0]:
            current.append(fragment)
    chunks.append(tuple(current))
    return tuple(chunks)


# --------------------------------------------------------------------------------------------------------------
# The whole prompt
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledPrompt:
    """One schedule entry of a sub-prompt: the text used while the step counter is ``<= end_step``."""

    end_step: int
    text: str
    chunks: tuple[Chunk, ...]
    """``BREAK``-separated chunks of ``(text, weight)`` fragments; encode each chunk on its own."""


@dataclass(frozen=True, slots=True)
class SubPrompt:
    """One ``AND``-separated part of a prompt with its composable-diffusion weight and its schedule."""

    text: str
    weight: float
    schedule: tuple[ScheduledPrompt, ...]

    def at_step(self, step: int) -> ScheduledPrompt:
        """The entry A1111 uses at sampler step counter ``step`` (0-based).

        That is the first entry with ``step <= end_step``; past the last entry A1111 falls back to the first.
        """
        for entry in self.schedule:
            if step <= entry.end_step:
                return entry
        return self.schedule[0]


@dataclass(frozen=True, slots=True)
class StepRange:
    """A run of sampler steps, ``first_step`` to ``end_step`` inclusive, over which no sub-prompt changes."""

    first_step: int
    end_step: int
    prompts: tuple[tuple[float, ScheduledPrompt], ...]
    """``(AND weight, entry)`` for every sub-prompt, in prompt order."""


@dataclass(frozen=True)
class PromptSchedule:
    """A parsed positive (or negative) prompt, ready to encode step by step.

    ``text`` is the prompt after comment and extra-network removal; ``networks`` are the removed tags in order.
    """

    text: str
    steps: int
    subprompts: tuple[SubPrompt, ...]
    networks: tuple[ExtraNetworkTag, ...]

    @property
    def loras(self) -> tuple[LoraTag, ...]:
        """The Lora tags (``<lora:…>`` and ``<lyco:…>``) whose arguments parsed."""
        return tuple(tag for tag in self.networks if isinstance(tag, LoraTag))

    @property
    def invalid_networks(self) -> tuple[ExtraNetworkTag, ...]:
        """Lora and hypernetwork tags whose arguments did not parse (A1111 logs these and skips the networks)."""
        return tuple(
            tag
            for tag in self.networks
            if (tag.kind in LORA_KINDS or tag.kind == "hypernet") and type(tag) is ExtraNetworkTag
        )

    @property
    def is_static(self) -> bool:
        """True when no sub-prompt changes during sampling (no prompt editing or alternation)."""
        return all(len(sub.schedule) == 1 for sub in self.subprompts)

    def at_step(self, step: int) -> tuple[tuple[float, ScheduledPrompt], ...]:
        """``(AND weight, entry)`` for every sub-prompt at sampler step counter ``step`` (0-based)."""
        return tuple((sub.weight, sub.at_step(step)) for sub in self.subprompts)

    def step_ranges(self) -> tuple[StepRange, ...]:
        """The step counter split into ranges over which the conditioning stays the same, from step 0."""
        ends = sorted({entry.end_step for sub in self.subprompts for entry in sub.schedule})
        ranges: list[StepRange] = []
        first = 0
        for end in ends:
            if end < first:
                continue
            ranges.append(StepRange(first, end, self.at_step(end)))
            first = end + 1
        return tuple(ranges)


def parse_prompt(
    text: str,
    steps: int,
    *,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
    comments: bool = True,
    strict: bool = False,
) -> PromptSchedule:
    """Parse an A1111 prompt into its per-step schedule of weighted chunks and its extra-network tags.

    ``steps`` is the step count the schedule is built for; A1111 doubles it for second-order samplers
    (see ``SamplerInfo.total_steps``). ``hires_steps``/``use_old_scheduling`` are as in :func:`prompt_schedules`.
    ``comments`` strips ``#`` comments first (A1111's default). With ``strict``, a Lora or hypernetwork tag with
    arguments that are not numbers raises :class:`PromptSyntaxError` instead of being kept as a plain tag.

    >>> schedule = parse_prompt("a (cat:1.2) BREAK [dog:fox:5] <lora:film:0.7>", 20)
    >>> [(entry.end_step, entry.chunks) for entry in schedule.subprompts[0].schedule]
    [(5, ((('a ', 1.0), ('cat', 1.2)), (('dog', 1.0),))), (20, ((('a ', 1.0), ('cat', 1.2)), (('fox', 1.0),)))]
    >>> schedule.loras[0].name, schedule.loras[0].te_weight
    ('film', 0.7)
    """
    if comments:
        text = strip_comments(text)
    text, networks = extract_extra_networks(text, strict=strict)

    attention_cache: dict[str, tuple[Chunk, ...]] = {}

    def chunks_of(scheduled_text: str) -> tuple[Chunk, ...]:
        if scheduled_text not in attention_cache:
            attention_cache[scheduled_text] = split_chunks(parse_prompt_attention(scheduled_text))
        return attention_cache[scheduled_text]

    subprompts = []
    for sub_text, weight in split_and(text):
        entries = prompt_schedules(
            sub_text, steps, hires_steps=hires_steps, use_old_scheduling=use_old_scheduling
        )
        schedule = tuple(ScheduledPrompt(end, entry, chunks_of(entry)) for end, entry in entries)
        subprompts.append(SubPrompt(sub_text, weight, schedule))

    schedule_steps = hires_steps if hires_steps is not None and not use_old_scheduling else steps
    return PromptSchedule(text, schedule_steps, tuple(subprompts), tuple(networks))
