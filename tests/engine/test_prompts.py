"""Prompt encoding on the tiny SD 1.x model: A1111 emphasis, 75-token chunks, BREAK, textual inversion,
and prompt editing switching the conditioning at the scheduled step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sdfleet.a1111 import parse_prompt
from sdfleet.engine.base import GenerationResult
from sdfleet.engine.sd import conditioning
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.engine.sd.prompts import Encoded, PromptEncoder
from tests.engine.conftest import spec

Run = Callable[..., GenerationResult]


def encoder(engine: DiffusersEngine) -> PromptEncoder:
    assert engine.default_model is not None
    return engine.store.get(engine.default_model).encoder


def encode(engine: DiffusersEngine, text: str, clip_skip: int = 1) -> Encoded:
    chunks = parse_prompt(text, 20).subprompts[0].schedule[0].chunks
    return encoder(engine).encode(chunks, clip_skip)[0]


def test_weighted_prompt_scales_its_tokens_relative_to_the_rest(engine: DiffusersEngine) -> None:
    plain = encode(engine, "a cat on a mat").embeds[0]
    weighted = encode(engine, "a (cat:1.5) on a mat").embeds[0]
    # tokens: BOS a cat on a mat EOS…; A1111 multiplies the cat token by 1.5, then rescales all to the old mean
    ratio_cat = weighted[2] / plain[2]
    ratio_other = weighted[3] / plain[3]
    assert torch.allclose(ratio_cat / ratio_other, torch.full_like(ratio_cat, 1.5), rtol=1e-3, atol=1e-3)
    assert torch.allclose(weighted.mean(), plain.mean(), rtol=1e-4, atol=1e-6)
    lowered = encode(engine, "a [cat] on a mat").embeds[0]
    assert torch.allclose(
        (lowered[2] / plain[2]) / (lowered[3] / plain[3]),
        torch.full_like(ratio_cat, 1 / 1.1),
        rtol=1e-3,
        atol=1e-3,
    )


def test_long_prompt_is_encoded_in_chunks_of_75_tokens(engine: DiffusersEngine) -> None:
    assert encode(engine, "cat").chunks == 1
    words = " ".join(["cat"] * 80)
    long = encode(engine, words)
    assert long.chunks == 2 and long.embeds.shape[1] == 154
    enc = encoder(engine)
    chunks, _ = enc.token_chunks(0, parse_prompt(words, 20).subprompts[0].schedule[0].chunks)
    assert all(len(c.tokens) == 77 for c in chunks)
    assert chunks[0].tokens[0] == 49406 and chunks[0].tokens[76] == 49407


def test_comma_backtracking_moves_the_last_phrase_to_the_next_chunk(engine: DiffusersEngine) -> None:
    text = " ".join(["cat"] * 70) + ", red dog with a hat"
    chunks, _ = encoder(engine).token_chunks(0, parse_prompt(text, 20).subprompts[0].schedule[0].chunks)
    assert len(chunks) == 2
    comma = encoder(engine).slots[0].comma
    assert chunks[0].tokens[71] == comma and chunks[0].tokens[72] == 49407  # padded after the comma
    assert chunks[1].tokens[1:6] != [49407] * 5


def test_break_starts_a_new_chunk(engine: DiffusersEngine) -> None:
    assert encode(engine, "a cat BREAK a dog").chunks == 2
    assert encode(engine, "a cat break a dog").chunks == 1


def test_clip_skip_changes_the_conditioning(engine: DiffusersEngine) -> None:
    assert not torch.equal(encode(engine, "a cat").embeds, encode(engine, "a cat", clip_skip=2).embeds)


def test_textual_inversion_embedding_is_spliced_in_and_hashed(engine: DiffusersEngine, run: Run) -> None:
    run(spec())  # the engine loads its embeddings with the first job
    plain = encode(engine, "a photo of tinyemb")
    chunks, used = encoder(engine).token_chunks(
        0, parse_prompt("a photo of tinyemb", 20).subprompts[0].schedule[0].chunks
    )
    assert used == {"tinyemb"} and chunks[0].fixes and chunks[0].fixes[0][0] == 3
    assert not torch.equal(plain.embeds, encode(engine, "a photo of tiny emb").embeds)
    result = run(spec(prompt="a photo of tinyemb"))
    assert 'TI hashes: "tinyemb: ' in result.images[0].infotext


def test_negative_prompt_is_padded_to_the_prompt_chunk_count(engine: DiffusersEngine) -> None:
    positive = parse_prompt(" ".join(["cat"] * 80), 4)
    conds = conditioning.build(
        encoder(engine), positive, "ugly", steps=4, hires_steps=None, clip_skip=1, zero_empty_negative=False
    )
    entry = conds.at(0)
    assert entry.uncond.embeds.shape == entry.conds[0][1].embeds.shape == (1, 154, 32)


def test_prompt_editing_switches_the_conditioning_at_the_scheduled_step(
    engine: DiffusersEngine, run: Run
) -> None:
    assert engine.default_model is not None
    unet = engine.store.get(engine.default_model).pipe.unet
    seen: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["encoder_hidden_states"].clone())

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run(spec(prompt="a photo of a [cat:dog:2]", steps=4, sampler_name="Euler"))
    finally:
        handle.remove()
    cat = encode(engine, "a photo of a cat").embeds[0]
    dog = encode(engine, "a photo of a dog").embeds[0]
    assert len(seen) == 4
    conds = [s[1] for s in seen]  # row 0 is the negative prompt, row 1 the prompt
    assert [torch.equal(c, cat) for c in conds] == [True, True, True, False]
    assert torch.equal(conds[3], dog)


def test_alternation_changes_every_step(engine: DiffusersEngine, run: Run) -> None:
    # A1111's step counter starts at 0 and the first entry lasts until step 1: "dog" comes at step 2
    a = run(spec(prompt="a [cat|dog]", sampler_name="Euler", steps=4))
    b = run(spec(prompt="a cat", sampler_name="Euler", steps=4))
    assert not np.array_equal(np.asarray(a.images[0].image), np.asarray(b.images[0].image))


def test_the_offline_tokenizer_gives_the_real_clip_ids(engine: DiffusersEngine) -> None:
    slot = encoder(engine).slots[0]
    assert slot.tokenize(["a photo of a cat"]) == [[320, 1125, 539, 320, 2368]]
    assert (slot.bos, slot.eos, slot.pad, slot.comma) == (49406, 49407, 49407, 267)
