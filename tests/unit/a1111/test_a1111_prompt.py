"""Tests for the A1111 prompt language parser.

Expected values come from A1111's own doctests in ``modules/prompt_parser.py`` and from running A1111's
parser (its lark grammar and functions) on the same inputs.
"""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdfleet.a1111 import (
    ExtraNetworkTag,
    HypernetTag,
    LoraTag,
    PromptSyntaxError,
    extract_extra_networks,
    parse_prompt,
    parse_prompt_attention,
    prompt_schedules,
    split_and,
    split_chunks,
    strip_comments,
)
from sdfleet.a1111 import prompt as prompt_module

# --------------------------------------------------------------------------------------------------------------
# parse_prompt_attention
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # A1111's doctests
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        # nesting
        ("((a))", [("a", 1.2100000000000002)]),
        ("[[a]]", [("a", 0.8264462809917354)]),
        ("a [b] c", [("a ", 1.0), ("b", 0.9090909090909091), (" c", 1.0)]),
        ("(a:1.3) (b)", [("a", 1.3), (" ", 1.0), ("b", 1.1)]),
        ("( a : 1.5 )", [(" a ", 1.5)]),
        ("a (b:-1) c", [("a ", 1.0), ("b", -1.0), (" c", 1.0)]),
        (
            "masterpiece, (best quality:1.2), [[blurry]], (a [b] c)",
            [
                ("masterpiece, ", 1.0),
                ("best quality", 1.2),
                (", ", 1.0),
                ("blurry", 0.8264462809917354),
                (", ", 1.0),
                ("a ", 1.1),
                ("b", 1.0),
                (" c", 1.1),
            ],
        ),
        # escapes: \( \) \[ \] \\ are literal; any other backslash is dropped
        ("\\(a\\) \\\\ b\\c", [("(a) \\ bc", 1.0)]),
        (
            "text (with \\(escaped\\) parens:1.2) end",
            [("text ", 1.0), ("with (escaped) parens", 1.2), (" end", 1.0)],
        ),
        # BREAK
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
        ("a BREAKb BREAK", [("a BREAKb", 1.0), ("BREAK", -1.0), ("", 1.0)]),
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        # malformed input, read the way A1111 reads it
        ("", [("", 1.0)]),
        ("(a", [("a", 1.1)]),
        ("[[a]", [("a", 0.8264462809917354)]),
        ("a)", [("a)", 1.0)]),
        ("(a]", [("a]", 1.1)]),
        ("[a)", [("a)", 0.9090909090909091)]),
        ("(a:x)", [("a:x", 1.1)]),
        ("(a:1.2", [("a:1.2", 1.1)]),
        (":1.2)", [(":1.2)", 1.0)]),
    ],
)
def test_parse_prompt_attention_matches_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(prompt) == expected


@pytest.mark.parametrize("prompt", ["(a:1.2.3)", "(a:.)", "(a: +. )"])
def test_unreadable_weight_is_text_instead_of_an_error(prompt: str) -> None:
    # A1111 raises ValueError from float() here; we read ':' and the number as text inside the bracket.
    assert parse_prompt_attention(prompt) == [(prompt[1:-1], 1.1)]


def test_split_chunks_breaks_only_on_the_unweighted_marker() -> None:
    assert split_chunks(parse_prompt_attention("a (b) BREAK c")) == (
        (("a ", 1.0), ("b", 1.1)),
        (("c", 1.0),),
    )
    # Inside brackets BREAK's weight is multiplied, so A1111 encodes it as the word "BREAK".
    assert split_chunks(parse_prompt_attention("(a BREAK b)")) == ((("a", 1.1), ("BREAK", -1.1), ("b", 1.1)),)
    assert split_chunks(parse_prompt_attention("BREAK")) == ((), ())


# --------------------------------------------------------------------------------------------------------------
# prompt_schedules
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # A1111's doctests (steps=10)
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        (
            "[a|(b:1.1)]",
            [(i, "a" if i % 2 else "(b:1.1)") for i in range(1, 11)],
        ),
        ("[fe|]male", [(i, "female" if i % 2 else "male") for i in range(1, 11)]),
        ("[fe|||]male", [(i, "female" if i % 4 == 1 else "male") for i in range(1, 11)]),
        # The doctest "a [{b|d{:.5] c" is stale: A1111's current grammar rejects it, so it is used verbatim.
        ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
        # editing: from/to forms, whitespace, fractions and numbers
        ("[a:b:3]", [(3, "a"), (10, "b")]),
        ("[a: b :2]", [(2, "a"), (10, " b ")]),
        ("[a:b: 2 ]", [(2, "a"), (10, "b")]),
        ("[(a:1.2):(b:0.8):0.5]", [(5, "(a:1.2)"), (10, "(b:0.8)")]),
        ("a [b:c:+3] d", [(3, "a b d"), (10, "a c d")]),
        ("a [b:c:-1] d", [(10, "a c d")]),
        ("a [b:c:0] d", [(10, "a c d")]),
        ("a [b:c:100] d", [(10, "a b d")]),
        ("a [b:c:2.] d", [(10, "a b d")]),
        ("a [b:c:1e1]", [(10, "a b")]),
        ("x [a\\:b:c:2]", [(2, "x a\\:b"), (10, "x c")]),
        # input A1111's grammar rejects is used verbatim
        ("a | b [c:d:2]", [(10, "a | b [c:d:2]")]),
        ("a [b:c:2] \\", [(10, "a [b:c:2] \\")]),
        ("(a|b) [c:d:2]", [(10, "(a|b) [c:d:2]")]),
        ("[a:b:c]", [(10, "[a:b:c]")]),
    ],
)
def test_prompt_schedules_match_a1111(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedules(prompt, 10) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[a|b]", [(1, "a"), (2, "b"), (3, "a"), (4, "b")]),
        ("a [b|c|d] e", [(1, "a b e"), (2, "a c e"), (3, "a d e"), (4, "a b e")]),
        ("[[a|b]:c:2]", [(1, "a"), (2, "b"), (3, "c"), (4, "c")]),
        ("[a:[b|c]:2]", [(1, "a"), (2, "a"), (3, "b"), (4, "c")]),
    ],
)
def test_alternation_cycles_every_step(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedules(prompt, 4) == expected


def test_hires_schedules_match_a1111() -> None:
    # A1111's doctests with hires_steps=10: fractions run from 1.0 to 2.0, integers count on after the first pass
    assert prompt_schedules("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert prompt_schedules("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert prompt_schedules("[a:b:5]", 10, hires_steps=20) == [(20, "b")]
    assert prompt_schedules("[a:b:15]", 10, hires_steps=20) == [(5, "a"), (20, "b")]


def test_old_scheduling_uses_fractions_below_one() -> None:
    assert prompt_schedules("[a:b:0.5]", 10, hires_steps=20, use_old_scheduling=True) == [(5, "a"), (10, "b")]
    assert prompt_schedules("[a:b:2.0]", 10, use_old_scheduling=True) == [(2, "a"), (10, "b")]
    assert prompt_schedules("[a:b:2.0]", 10) == [(10, "a")]


def test_construct_followed_by_a_stray_bracket_is_read_as_the_construct() -> None:
    # A1111's Earley parse of these is ambiguous and its choice changes with Python's hash seed; we always read
    # the construct (one of the answers A1111 gives).
    assert prompt_schedules("[b:3])", 10) == [(3, ")"), (10, "b)")]
    assert prompt_schedules("[a:b:3][x", 10) == [(3, "a[x"), (10, "b[x")]


def test_numbers_that_overflow_do_not_crash() -> None:
    # A1111 raises OverflowError from int(inf) on these
    assert prompt_schedules("a [b:c:1e999] d", 10) == [(10, "a b d")]
    assert prompt_schedules("a [b:c:-1e999] d", 10) == [(10, "a c d")]
    assert prompt_schedules("[a:b:1.e999]", 0) == [(0, "a")]


def test_absurdly_deep_nesting_is_kept_verbatim() -> None:
    prompt = "[" * 500 + "a:b:3" + "]" * 500
    assert prompt_schedules(prompt, 10) == [(10, prompt)]
    assert parse_prompt_attention("(" * 2000 + "a")[0][0] == "a"


# --------------------------------------------------------------------------------------------------------------
# AND, comments, extra networks
# --------------------------------------------------------------------------------------------------------------


def test_split_and_with_weights() -> None:
    assert split_and("a cat AND a dog :1.2") == [("a cat", 1.0), (" a dog", 1.2)]
    assert split_and("a AND b:-0.5 AND c:.5") == [("a", 1.0), (" b", -0.5), (" c", 0.5)]
    assert split_and("ANDROID AND x") == [("ANDROID", 1.0), (" x", 1.0)]
    assert split_and("sunset:2") == [("sunset", 2.0)]
    assert split_and("[a:b:5]") == [("[a:b:5]", 1.0)]


def test_strip_comments() -> None:
    assert strip_comments("a cat # a comment\nin a hat") == "a cat \nin a hat"
    assert strip_comments("# whole line\nprompt") == "\nprompt"
    assert strip_comments("no comment") == "no comment"


def test_lora_tags_with_one_and_two_weights() -> None:
    text, tags = extract_extra_networks("a <lora:film:0.8> b <lora:detail:0.5:1.2>, <lora:plain>")
    assert text == "a  b , "
    assert tags == [
        LoraTag("lora", ("film", "0.8"), te_weight=0.8, unet_weight=0.8),
        LoraTag("lora", ("detail", "0.5", "1.2"), te_weight=0.5, unet_weight=1.2),
        LoraTag("lora", ("plain",), te_weight=1.0, unet_weight=1.0),
    ]
    assert [tag.name for tag in tags] == ["film", "detail", "plain"]


def test_lora_named_arguments_dyn_dim_and_lyco() -> None:
    _, tags = extract_extra_networks("<lora:x:te=0.3:unet=0.7:dyn=16><lyco:y:0.5:0.4:8><lora:z:a=b=c>")
    assert tags[0] == LoraTag(
        "lora", ("x", "te=0.3", "unet=0.7", "dyn=16"), te_weight=0.3, unet_weight=0.7, dyn_dim=16
    )
    assert tags[0].named == {"te": "0.3", "unet": "0.7", "dyn": "16"}
    assert tags[1] == LoraTag("lyco", ("y", "0.5", "0.4", "8"), te_weight=0.5, unet_weight=0.4, dyn_dim=8)
    # "a=b=c" is positional in A1111 (split into more than two parts); it is not a number, so the tag is invalid
    assert type(tags[2]) is ExtraNetworkTag
    assert tags[2].positional == ("z", "a=b=c")


def test_hypernet_and_other_kinds() -> None:
    text, tags = extract_extra_networks(
        "x<hypernet:anime:0.6><hypernet:plain><custom:a:b:c>y <not a tag> <:x>"
    )
    assert text == "xy <not a tag> <:x>"
    assert tags == [
        HypernetTag("hypernet", ("anime", "0.6"), multiplier=0.6),
        HypernetTag("hypernet", ("plain",), multiplier=1.0),
        ExtraNetworkTag("custom", ("a", "b", "c")),
    ]
    assert tags[2].text == "<custom:a:b:c>"


def test_bad_lora_weight_is_kept_as_plain_tag_or_raises_when_strict() -> None:
    schedule = parse_prompt("a <lora:x:strong> b", 20)
    assert schedule.loras == ()
    assert schedule.invalid_networks == (ExtraNetworkTag("lora", ("x", "strong")),)
    with pytest.raises(PromptSyntaxError, match="strong"):
        parse_prompt("a <lora:x:strong> b", 20, strict=True)


# --------------------------------------------------------------------------------------------------------------
# parse_prompt
# --------------------------------------------------------------------------------------------------------------


def test_parse_prompt_builds_schedule_of_weighted_chunks() -> None:
    schedule = parse_prompt("a (cat:1.2) BREAK [dog:fox:5] # comment\n<lora:film:0.7>", 20)
    assert schedule.text == "a (cat:1.2) BREAK [dog:fox:5] \n"
    assert schedule.steps == 20
    assert schedule.loras == (LoraTag("lora", ("film", "0.7"), te_weight=0.7, unet_weight=0.7),)
    (sub,) = schedule.subprompts
    assert sub.weight == 1.0
    assert [(entry.end_step, entry.chunks) for entry in sub.schedule] == [
        (5, ((("a ", 1.0), ("cat", 1.2)), (("dog", 1.0),))),
        (20, ((("a ", 1.0), ("cat", 1.2)), (("fox", 1.0),))),
    ]
    assert not schedule.is_static


def test_step_counter_follows_a1111() -> None:
    # A1111 uses an entry while its 0-based step counter is <= end_step, so "a" covers steps 0..3.
    schedule = parse_prompt("[a:b:3]", 10)
    assert [schedule.at_step(step)[0][1].text for step in range(10)] == ["a"] * 4 + ["b"] * 6
    alternating = parse_prompt("[a|b]", 4)
    assert [alternating.at_step(step)[0][1].text for step in range(4)] == ["a", "a", "b", "a"]
    # past the last entry A1111 falls back to the first one
    assert schedule.at_step(11)[0][1].text == "a"


def test_composable_prompts_and_step_ranges() -> None:
    schedule = parse_prompt("a [red:blue:4] car AND a tree:0.5 AND [day:night:8]:1.5", 10)
    assert [(sub.text, sub.weight) for sub in schedule.subprompts] == [
        ("a [red:blue:4] car", 1.0),
        (" a tree", 0.5),
        (" [day:night:8]", 1.5),
    ]
    ranges = schedule.step_ranges()
    assert [(r.first_step, r.end_step) for r in ranges] == [(0, 4), (5, 8), (9, 10)]
    assert [[entry.text for _, entry in r.prompts] for r in ranges] == [
        ["a red car", " a tree", " day"],
        ["a blue car", " a tree", " day"],
        ["a blue car", " a tree", " night"],
    ]
    assert [weight for weight, _ in ranges[0].prompts] == [1.0, 0.5, 1.5]


def test_static_prompt_has_one_entry() -> None:
    schedule = parse_prompt("masterpiece, (best quality:1.2), 1girl", 30)
    assert schedule.is_static
    assert schedule.step_ranges()[0].first_step == 0
    assert schedule.step_ranges()[0].end_step == 30
    assert schedule.networks == ()


def test_empty_prompt() -> None:
    schedule = parse_prompt("", 20)
    assert [entry.chunks for entry in schedule.subprompts[0].schedule] == [((),)]


def test_hires_schedule_steps() -> None:
    schedule = parse_prompt("[a:b:1.5]", 10, hires_steps=20)
    assert schedule.steps == 20
    assert [(e.end_step, e.text) for e in schedule.subprompts[0].schedule] == [(10, "a"), (20, "b")]


# --------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------

_PROMPT_TEXT = st.text(
    alphabet=st.sampled_from(list("ab :|()[]\\.,0123456789-+eBREAKND<>lor=\n")), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(text=_PROMPT_TEXT, steps=st.integers(min_value=0, max_value=40))
def test_parsing_never_fails_and_schedules_are_well_formed(text: str, steps: int) -> None:
    schedule = prompt_schedules(text, steps)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends))
    assert ends[-1] == steps
    fragments = parse_prompt_attention(text)
    assert fragments
    parsed = parse_prompt(text, steps)
    assert all(sub.schedule for sub in parsed.subprompts)


@given(text=st.text(alphabet=st.characters(blacklist_characters="[]():|\\<#"), max_size=80))
def test_text_without_syntax_is_one_unweighted_entry(text: str) -> None:
    assert prompt_schedules(text, 20) == [(20, text)]
    assert all(weight in (1.0, -1.0) for _, weight in parse_prompt_attention(text))


def test_docstring_examples() -> None:
    assert doctest.testmod(prompt_module).failed == 0
