"""Per-step conditioning of one sampling pass: the parsed prompt schedules turned into tensors.

The positive prompt may hold prompt editing (``[a:b:when]``), alternation (``[a|b]``) and ``AND``
(composable diffusion); the negative prompt may hold editing and alternation (A1111 does not split it on
``AND``). Each distinct scheduled text is encoded once; every tensor of the pass is padded with
empty-prompt chunks to the same chunk count, so the batch rows line up and the conditioning can change
from one step to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdfleet.a1111 import (
    Chunk,
    PromptSchedule,
    parse_prompt,
    parse_prompt_attention,
    prompt_schedules,
    split_chunks,
    strip_comments,
)
from sdfleet.engine.sd.prompts import Encoded, PromptEncoder, empty_chunks, pad_to


@dataclass(frozen=True, slots=True)
class StepConds:
    """Conditioning for a run of steps: the negative, and ``(AND weight, positive)`` per sub-prompt."""

    end_step: int
    uncond: Encoded
    conds: tuple[tuple[float, Encoded], ...]


@dataclass(frozen=True, slots=True)
class PassConds:
    """All conditioning of one pass, by step; ``at(i)`` gives what step ``i`` (0-based) uses."""

    ranges: tuple[StepConds, ...]
    embeddings_used: frozenset[str]
    static: bool

    def at(self, step: int) -> StepConds:
        for entry in self.ranges:
            if step <= entry.end_step:
                return entry
        return self.ranges[-1]


def negative_schedule(text: str, steps: int, hires_steps: int | None) -> list[tuple[int, tuple[Chunk, ...]]]:
    """The negative prompt's schedule (editing and alternation, no ``AND`` split, as A1111)."""
    entries = prompt_schedules(strip_comments(text), steps, hires_steps=hires_steps)
    return [(end, split_chunks(parse_prompt_attention(entry))) for end, entry in entries]


def build(
    encoder: PromptEncoder,
    positive: PromptSchedule,
    negative: str,
    *,
    steps: int,
    hires_steps: int | None,
    clip_skip: int,
    zero_empty_negative: bool,
) -> PassConds:
    """Encode a pass's conditioning (cached per text by the encoder) and pad it to one chunk count."""
    neg = negative_schedule(negative, steps, hires_steps)
    ends = sorted({r.end_step for r in positive.step_ranges()} | {end for end, _ in neg})
    used: set[str] = set()
    raw: list[tuple[int, Encoded, list[tuple[float, Encoded]]]] = []
    first = 0
    for end in ends:
        if end < first:
            continue
        neg_chunks = next((chunks for e, chunks in neg if first <= e), neg[-1][1])
        uncond, names = encoder.encode(neg_chunks, clip_skip)
        used |= names
        conds = []
        for weight, entry in positive.at_step(first):
            cond, names = encoder.encode(entry.chunks, clip_skip)
            used |= names
            conds.append((weight, cond))
        raw.append((end, uncond, conds))
        first = end + 1
    width = max(max(u.chunks, *(c.chunks for _, c in cs)) for _, u, cs in raw)
    empty: Encoded | None = None
    if any(u.chunks != width or any(c.chunks != width for _, c in cs) for _, u, cs in raw):
        empty, _ = encoder.encode(empty_chunks(), clip_skip)
    ranges = []
    for end, uncond, conds in raw:
        if empty is not None:
            uncond = pad_to(uncond, width, empty)
            conds = [(w, pad_to(c, width, empty)) for w, c in conds]
        if zero_empty_negative and not negative.strip():
            pooled = None if uncond.pooled is None else torch.zeros_like(uncond.pooled)
            uncond = Encoded(torch.zeros_like(uncond.embeds), pooled)
        ranges.append(StepConds(end, uncond, tuple(conds)))
    return PassConds(tuple(ranges), frozenset(used), len(ranges) == 1)


def parse_positive(text: str, steps: int, hires_steps: int | None = None) -> PromptSchedule:
    """Parse a positive prompt for a pass of ``steps`` (schedule steps, doubled for second-order samplers)."""
    return parse_prompt(text, steps, hires_steps=hires_steps)
