"""The real CLIP BPE tokenizer files, built offline from the BPE table that open-clip-torch ships.

Stable Diffusion's tokenizers (SD 1.x, SD 2.x's OpenCLIP, both SDXL encoders) all use OpenAI's CLIP BPE
vocabulary. Rather than ship 1.5 MB of ``vocab.json`` + ``merges.txt`` per architecture, we rebuild them
from ``open_clip/bpe_simple_vocab_16e6.txt.gz`` exactly as OpenAI's simple tokenizer does (49,408 ids,
``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407). The package is located without importing it
(``import open_clip`` would import torchvision).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdfleet.errors import ConfigError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    codes = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(visible, (chr(c) for c in codes), strict=True))


def bpe_path() -> Path:
    """The BPE table: a copy shipped next to the engine configs if present, else open-clip-torch's;
    :class:`ConfigError` when neither is installed."""
    shipped = Path(__file__).resolve().parent.parent / "configs" / BPE_FILE
    if shipped.is_file():
        return shipped
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / BPE_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "the CLIP tokenizer table is missing: install open-clip-torch (pip install --no-deps open-clip-torch)",
        field="engine",
    )


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """OpenAI CLIP's vocabulary (token → id) and BPE merges, in order."""
    lines = gzip.decompress(bpe_path().read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : _MERGES + 1]
    units = list(_bytes_to_unicode().values())
    tokens = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, *, pad_token: str = "<|endoftext|>") -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the configs of a CLIP tokenizer into ``folder``.

    ``pad_token`` is ``<|endoftext|>`` for OpenAI CLIP (SD 1.x, SDXL's first encoder) and ``!`` for
    OpenCLIP (SD 2.x, SDXL's second encoder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    _atomic_write(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _atomic_write(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    _atomic_write(folder / "tokenizer_config.json", json.dumps(config, indent=2))
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    _atomic_write(folder / "special_tokens_map.json", json.dumps(specials, indent=2))
    return folder


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


_TOKENIZERS: dict[str, object] = {}


def make_tokenizer(pad_token: str = "<|endoftext|>") -> object:
    """A ``transformers.CLIPTokenizer`` built in memory (no files), cached per pad token.

    Tokenizers are read-only after construction here (no tokens are ever added), so one instance is
    shared by every pipeline that uses the same pad token.
    """
    if pad_token not in _TOKENIZERS:
        transformers: Any = importlib.import_module("transformers")
        vocab, merges = vocab_and_merges()
        _TOKENIZERS[pad_token] = transformers.CLIPTokenizer(
            vocab=dict(vocab),
            merges=[tuple(m.split()) for m in merges],
            model_max_length=77,
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            pad_token=pad_token,
        )
    return _TOKENIZERS[pad_token]
