"""Prompt encoding the way A1111 does it (``sd_hijack_clip``), on diffusers/transformers text encoders.

The A1111 parser (:mod:`sdfleet.a1111.prompt`) turns a prompt into ``BREAK``-separated chunks of
``(text, weight)`` fragments. Here each fragment is tokenised on its own, tokens are packed into chunks
of 75 (with A1111's comma backtracking: when a chunk fills up and the last comma is at most 20 tokens
back, the tokens after it move to the next chunk), textual-inversion embeddings are found by their token
sequence and spliced into the token-embedding output, every chunk is wrapped as ``[BOS] + 75 + [EOS]``,
encoded, weighted ("Original" emphasis: multiply by the weights, then restore the chunk's mean), and
the chunks are concatenated (77·k tokens).

Encoder outputs per architecture, as in A1111: SD 1.x takes the last hidden state, or with clip skip N
the hidden state −N through the final layer norm; SD 2.x the diffusers 23-layer OpenCLIP's last hidden
state (= OpenCLIP's penultimate layer + ``ln_final``), tokens after the first EOS replaced by the pad
token; SDXL the penultimate hidden states of both encoders side by side, and the pooled projection of
the second encoder from the first chunk (clip skip is ignored for SD 2.x and SDXL, as in A1111).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdfleet.a1111 import Chunk
from sdfleet.engine.sd.checkpoints import SD1, SD2, SDXL_REFINER, check_format
from sdfleet.errors import ValidationError

log = logging.getLogger("sdfleet.engine")

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20
_CACHE_SIZE = 64


@dataclass(slots=True)
class TokenChunk:
    """One 77-token chunk: ids, per-token weights, and embedding vectors to splice in at offsets."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, torch.Tensor]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A prompt's conditioning: ``embeds`` [1, 77·k, D] and (SDXL) ``pooled`` [1, P]."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None

    @property
    def chunks(self) -> int:
        return int(self.embeds.shape[1]) // 77


@dataclass(frozen=True, slots=True)
class Embedding:
    """A textual-inversion embedding: vectors per encoder kind (``clip_l``, ``clip_g``, or ``*``)."""

    name: str
    vectors: dict[str, torch.Tensor]
    path: Path
    sha256: str

    def for_encoder(self, kind: str, dim: int) -> torch.Tensor | None:
        """The vectors this embedding has for an encoder of ``kind`` and width ``dim`` (None: unusable)."""
        candidates = [self.vectors.get(kind), self.vectors.get("*")]
        for vec in candidates:
            if vec is not None and int(vec.shape[-1]) == dim:
                return vec
        return None


def load_embedding(name: str, path: Path, sha256: str) -> Embedding:
    """Read a textual-inversion file: A1111 ``emb_params`` / ``string_to_param``, SDXL ``clip_l``/``clip_g``,
    or the diffusers single-tensor format. Pickle formats are refused here (safetensors only)."""
    check_format(path, allow_pickle=False, field="embedding")
    from safetensors.torch import load_file

    try:
        data = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValidationError(
            f"embedding {name!r}: unreadable file {path.name}: {exc}", field="prompt"
        ) from exc
    vectors: dict[str, torch.Tensor] = {}
    if "clip_l" in data or "clip_g" in data:
        vectors = {k: data[k] for k in ("clip_l", "clip_g") if k in data}
    elif "emb_params" in data:
        vectors["*"] = data["emb_params"]
    else:
        params = [v for k, v in data.items() if k.startswith("string_to_param")]
        if params:
            vectors["*"] = params[0]
        elif len(data) == 1:
            vectors["*"] = next(iter(data.values()))
    if not vectors:
        raise ValidationError(f"embedding {name!r}: no embedding tensors in {path.name}", field="prompt")
    fixed = {}
    for kind, vec in vectors.items():
        vec = vec.detach().float()
        fixed[kind] = vec.reshape(-1, vec.shape[-1]) if vec.dim() != 2 else vec
    return Embedding(name, fixed, path, sha256)


class _Slot:
    """One text encoder with its tokenizer and A1111's rules for it."""

    def __init__(self, name: str, model: Any, tokenizer: Any, kind: str, rule: str) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind  # clip_l | clip_g | clip_h
        self.rule = rule  # sd1 | last | penultimate
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id)
        self.comma = int(tokenizer.convert_tokens_to_ids(",</w>"))
        self.dim = int(model.config.hidden_size)
        self.with_projection = hasattr(model, "text_projection")
        self._token_cache: dict[str, list[int]] = {}

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._token_cache]
        if missing:
            ids = self.tokenizer(list(missing), add_special_tokens=False, truncation=False)["input_ids"]
            if len(self._token_cache) > 4096:
                self._token_cache.clear()
            self._token_cache.update(zip(missing, (list(map(int, i)) for i in ids), strict=True))
        return [self._token_cache[t] for t in texts]


class PromptEncoder:
    """Encodes parsed prompt chunks with one checkpoint's text encoders (thread-safe, cached)."""

    def __init__(self, arch: str, pipe: Any, device: Any, dtype: Any) -> None:
        self.arch = arch
        self.device = device
        self.dtype = dtype
        self.slots: list[_Slot] = []
        if arch == SDXL_REFINER:
            self.slots.append(
                _Slot("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, "clip_g", "penultimate")
            )
        elif getattr(pipe, "text_encoder_2", None) is not None:
            self.slots.append(
                _Slot("text_encoder", pipe.text_encoder, pipe.tokenizer, "clip_l", "penultimate")
            )
            self.slots.append(
                _Slot("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, "clip_g", "penultimate")
            )
        else:
            rule = "sd1" if arch == SD1 else "last"
            kind = "clip_h" if arch == SD2 else "clip_l"
            self.slots.append(_Slot("text_encoder", pipe.text_encoder, pipe.tokenizer, kind, rule))
        self.embeddings: dict[str, Embedding] = {}
        self._lookup: list[dict[int, list[tuple[tuple[int, ...], torch.Tensor, Embedding]]]] = [
            {} for _ in self.slots
        ]
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Encoded] = OrderedDict()
        self.generation = 0  # bumped whenever weights that change encodings change (LoRA, embeddings)

    # ------------------------------------------------------------------ embeddings
    def set_embeddings(self, embeddings: Sequence[Embedding]) -> None:
        """Make exactly these textual-inversion embeddings active (matched by name in prompts)."""
        wanted = {e.name: e for e in embeddings}
        if wanted.keys() == self.embeddings.keys() and all(
            wanted[k].sha256 == v.sha256 for k, v in self.embeddings.items()
        ):
            return
        with self._lock:
            self.embeddings = wanted
            self._lookup = [{} for _ in self.slots]
            for index, slot in enumerate(self.slots):
                for emb in wanted.values():
                    vec = emb.for_encoder(slot.kind, slot.dim)
                    if vec is None:
                        log.warning(
                            "embedding.incompatible name=%s encoder=%s dim=%d", emb.name, slot.kind, slot.dim
                        )
                        continue
                    ids = tuple(slot.tokenize([emb.name])[0])
                    if ids:
                        self._lookup[index].setdefault(ids[0], []).append((ids, vec, emb))
                for entries in self._lookup[index].values():
                    entries.sort(key=lambda e: -len(e[0]))
            self.invalidate()

    def invalidate(self) -> None:
        """Forget cached encodings (after LoRA or embedding changes)."""
        self._cache.clear()
        self.generation += 1

    # ------------------------------------------------------------------ chunking
    def token_chunks(self, slot_index: int, chunks: Sequence[Chunk]) -> tuple[list[TokenChunk], set[str]]:
        """A1111's ``tokenize_line``: the 77-token chunks of one prompt and the embeddings it used."""
        slot = self.slots[slot_index]
        lookup = self._lookup[slot_index]
        used: set[str] = set()
        result: list[TokenChunk] = []
        chunk = TokenChunk()
        last_comma = -1

        def next_chunk() -> None:
            nonlocal chunk, last_comma
            to_add = CHUNK_LENGTH - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [slot.eos] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [slot.bos, *chunk.tokens, slot.eos]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            last_comma = -1
            result.append(chunk)
            chunk = TokenChunk()

        for index, fragments in enumerate(chunks):
            if index:
                next_chunk()  # BREAK
            texts = [text for text, _ in fragments]
            for tokens, (_, weight) in zip(slot.tokenize(texts), fragments, strict=True):
                position = 0
                while position < len(tokens):
                    token = tokens[position]
                    if token == slot.comma:
                        last_comma = len(chunk.tokens)
                    elif (
                        len(chunk.tokens) == CHUNK_LENGTH
                        and last_comma != -1
                        and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
                    ):
                        cut = last_comma + 1
                        moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                        chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                        next_chunk()
                        chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
                    if len(chunk.tokens) == CHUNK_LENGTH:
                        next_chunk()
                    match = self._embedding_at(lookup, tokens, position)
                    if match is None:
                        chunk.tokens.append(token)
                        chunk.multipliers.append(weight)
                        position += 1
                        continue
                    ids, vec, emb = match
                    used.add(emb.name)
                    n = int(vec.shape[0])
                    if len(chunk.tokens) + n > CHUNK_LENGTH:
                        next_chunk()
                    chunk.fixes.append((len(chunk.tokens), vec))
                    chunk.tokens += [0] * n
                    chunk.multipliers += [weight] * n
                    position += len(ids)
        if chunk.tokens or not result:
            next_chunk()
        return result, used

    @staticmethod
    def _embedding_at(
        lookup: dict[int, list[tuple[tuple[int, ...], torch.Tensor, Embedding]]],
        tokens: list[int],
        position: int,
    ) -> tuple[tuple[int, ...], torch.Tensor, Embedding] | None:
        for ids, vec, emb in lookup.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return ids, vec, emb
        return None

    # ------------------------------------------------------------------ encoding
    def encode(self, chunks: Sequence[Chunk], clip_skip: int = 1) -> tuple[Encoded, set[str]]:
        """Encode one prompt's chunks; returns the conditioning and the names of embeddings used."""
        key = (tuple(chunks), clip_skip if self.arch == SD1 else 1, self.generation)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached, self._used_names(chunks)
        parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        used: set[str] = set()
        for index, slot in enumerate(self.slots):
            token_chunks, names = self.token_chunks(index, chunks)
            used |= names
            z, slot_pooled = self._encode_slot(slot, token_chunks, clip_skip)
            parts.append(z)
            if slot.with_projection and slot_pooled is not None:
                pooled = slot_pooled
        embeds = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        result = Encoded(embeds, pooled)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result, used

    def _used_names(self, chunks: Sequence[Chunk]) -> set[str]:
        if not self.embeddings:
            return set()
        return self.token_chunks(0, chunks)[1]

    def _encode_slot(
        self, slot: _Slot, chunks: list[TokenChunk], clip_skip: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = torch.tensor([c.tokens for c in chunks], dtype=torch.long)
        if slot.pad != slot.eos:
            for row, chunk in enumerate(chunks):
                first_eos = chunk.tokens.index(slot.eos)
                tokens[row, first_eos + 1 :] = slot.pad
        tokens = tokens.to(self.device)
        fixes = [(row, offset, vec) for row, c in enumerate(chunks) for offset, vec in c.fixes]
        with _spliced(slot.model, fixes):
            out = slot.model(input_ids=tokens, output_hidden_states=True)
        if slot.rule == "sd1":
            if clip_skip > 1:
                z = out.hidden_states[-clip_skip]
                final_norm = getattr(slot.model, "final_layer_norm", None)
                if final_norm is None:
                    final_norm = slot.model.text_model.final_layer_norm
                z = final_norm(z)
            else:
                z = out.last_hidden_state
        elif slot.rule == "last":
            z = out.last_hidden_state
        else:
            z = out.hidden_states[-2]
        pooled = out.text_embeds[:1] if slot.with_projection else None
        multipliers = torch.tensor([c.multipliers for c in chunks], dtype=z.dtype, device=z.device)
        weighted = []
        for row in range(z.shape[0]):
            zr = z[row : row + 1]
            mult = multipliers[row : row + 1]
            if bool((mult != 1.0).any()):
                original_mean = zr.float().mean()
                zr = zr * mult.unsqueeze(-1)
                zr = zr * (original_mean / zr.float().mean()).to(zr.dtype)
            weighted.append(zr)
        embeds = torch.cat(weighted, dim=1).to(self.dtype)
        return embeds, (pooled.to(self.dtype) if pooled is not None else None)


@contextmanager
def _spliced(model: Any, fixes: list[tuple[int, int, torch.Tensor]]) -> Iterator[None]:
    """Replace token-embedding rows by textual-inversion vectors while ``model`` runs (A1111's
    ``EmbeddingsWithFixes``: the vectors go after BOS, at ``offset + 1``)."""
    if not fixes:
        yield
        return
    layer = model.get_input_embeddings()

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, offset, vec in fixes:
            n = min(int(vec.shape[0]), output.shape[1] - offset - 1)
            output[row, offset + 1 : offset + 1 + n] = vec[:n].to(output.device, output.dtype)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def empty_chunks() -> tuple[Chunk, ...]:
    """The chunks of an empty prompt (one chunk with nothing in it)."""
    return ((),)


def pad_to(encoded: Encoded, chunks: int, empty: Encoded) -> Encoded:
    """Pad a conditioning with empty-prompt chunks to ``chunks`` chunks (A1111's ``pad_cond``)."""
    have = encoded.chunks
    if have >= chunks:
        return encoded
    extra = empty.embeds.repeat(1, chunks - have, 1)
    return Encoded(torch.cat([encoded.embeds, extra], dim=1), encoded.pooled)
