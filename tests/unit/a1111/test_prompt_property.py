"""Properties of the A1111 prompt parser (:mod:`sdfleet.a1111.prompt`): it never raises on any string, its
attention weights are finite numbers, prompt editing and alternation of generated well-formed prompts give
the schedule A1111's rules say, and the text comes back without its syntax."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sdfleet.a1111.prompt import parse_prompt, parse_prompt_attention, prompt_schedules

FAST = settings(max_examples=150, deadline=None)

ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=()),  # every code point, lone surrogates and NUL included
        st.sampled_from("[]():|\\<>#,.0123456789 AND BREAK e+-lora"),
    ),
    max_size=200,
)
"""Any string, biased toward the prompt language's own characters and words."""

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=8).filter(
    lambda w: w.strip() not in ("AND", "BREAK") and "AND" not in w.upper() and "BREAK" not in w.upper()
)
"""Plain prompt text: no syntax characters, no keyword."""


@FAST
@given(text=ANY_TEXT, steps=st.integers(min_value=0, max_value=60), hires=st.none() | st.integers(1, 30))
def test_any_string_parses_and_every_weight_is_finite(text: str, steps: int, hires: int | None) -> None:
    parsed = parse_prompt(text, steps, hires_steps=hires)
    for sub in parsed.subprompts:
        assert math.isfinite(sub.weight), (text, sub.weight)
        assert sub.schedule
        for entry in sub.schedule:
            for chunk in entry.chunks:
                for fragment, weight in chunk:
                    assert isinstance(fragment, str)
                    assert math.isfinite(weight), (text, fragment, weight)
    for _, weight in parse_prompt_attention(text):
        assert math.isfinite(weight), (text, weight)


@FAST
@given(
    digits=st.integers(min_value=300, max_value=400),
    depth=st.integers(min_value=1, max_value=40),
    word=WORD,
)
def test_huge_and_deeply_multiplied_weights_stay_finite(digits: int, depth: int, word: str) -> None:
    """``(x:999…9)`` with hundreds of digits, weights nested until the product overflows, and ``AND`` weights
    of hundreds of digits: clamped to finite numbers of the same sign."""
    huge = f"({word}:{'9' * digits})"
    nested = "(" * depth + word + "".join(f":{'9' * 20})" for _ in range(depth))
    for text in (huge, nested, f"[{huge}]", f"({nested})"):
        for _, weight in parse_prompt_attention(text):
            assert math.isfinite(weight), (text, weight)
    composed = parse_prompt(f"{word}:{'9' * digits} AND {word}:-{'9' * digits}", 20)
    assert all(math.isfinite(sub.weight) for sub in composed.subprompts)
    assert [sub.weight > 0 for sub in composed.subprompts] == [True, False]


@FAST
@given(
    before=WORD,
    first=WORD,
    second=WORD,
    after=WORD,
    steps=st.integers(min_value=1, max_value=50),
    when=st.integers(min_value=0, max_value=60),
)
def test_prompt_editing_at_a_step_number(
    before: str, first: str, second: str, after: str, steps: int, when: int
) -> None:
    text = f"{before}[{first}:{second}:{when}]{after}"
    expected: list[tuple[int, str]] = []
    if 1 <= when < steps:
        expected.append((when, before + first + after))
    if when < steps:
        expected.append((steps, before + second + after))
    else:
        expected.append((steps, before + first + after))
    assert prompt_schedules(text, steps) == expected


@FAST
@given(
    first=WORD,
    second=WORD,
    steps=st.integers(min_value=1, max_value=50),
    hundredths=st.integers(min_value=1, max_value=99),
)
def test_prompt_editing_at_a_fraction(first: str, second: str, steps: int, hundredths: int) -> None:
    fraction = f"0.{hundredths:02d}"
    switch = int(float(fraction) * steps)
    schedule = prompt_schedules(f"[{first}:{second}:{fraction}]", steps)
    expected = ([(switch, first)] if switch >= 1 else []) + [(steps, second)]
    assert schedule == expected


@FAST
@given(
    options=st.lists(WORD, min_size=2, max_size=5), steps=st.integers(min_value=1, max_value=30), tail=WORD
)
def test_alternation_cycles_every_step(options: list[str], steps: int, tail: str) -> None:
    schedule = prompt_schedules(f"[{'|'.join(options)}]{tail}", steps)
    assert schedule == [(step, options[(step - 1) % len(options)] + tail) for step in range(1, steps + 1)]


EMPHASIS = st.one_of(
    WORD.map(lambda w: (w, w, 1.0)),
    WORD.map(lambda w: (f"({w})", w, 1.1)),
    WORD.map(lambda w: (f"[{w}]", w, 1 / 1.1)),
    st.tuples(WORD, st.integers(min_value=0, max_value=300)).map(
        lambda p: (f"({p[0]}:{p[1] / 100})", p[0], p[1] / 100)
    ),
)


@FAST
@given(parts=st.lists(EMPHASIS, min_size=1, max_size=8))
def test_attention_recovers_the_text_and_its_weights(parts: list[tuple[str, str, float]]) -> None:
    text = "".join(written for written, _, _ in parts)
    fragments = parse_prompt_attention(text)
    assert "".join(fragment for fragment, _ in fragments) == "".join(word for _, word, _ in parts)
    # Each character of the text carries the weight of the construct it was written in.
    weights_by_char = [weight for _, word, weight in parts for _ in word]
    got = [weight for fragment, weight in fragments for _ in fragment]
    assert got == weights_by_char


@FAST
@given(parts=st.lists(WORD, min_size=1, max_size=4), steps=st.integers(min_value=1, max_value=30))
def test_and_breaks_and_comments_keep_the_words(parts: list[str], steps: int) -> None:
    text = " AND ".join(f"{word} BREAK {word}" for word in parts) + "\n# a comment [x:y:3]"
    parsed = parse_prompt(text, steps)
    assert len(parsed.subprompts) == len(parts)
    for sub, word in zip(parsed.subprompts, parts, strict=True):
        [entry] = sub.schedule
        assert entry.end_step == steps
        assert len(entry.chunks) == 2
        recovered = "".join(fragment for chunk in entry.chunks for fragment, _ in chunk)
        assert recovered.replace(" ", "") == (word * 2).replace(" ", "")
