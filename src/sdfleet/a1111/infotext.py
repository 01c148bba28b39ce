"""A1111 infotext: the ``parameters`` text stored in every generated image, written and parsed as A1111 1.10 does.

Layout::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>      (omitted when empty)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 512x512, …

:func:`format_infotext` writes it from :class:`InfotextParams`; :func:`parse_infotext` implements A1111's
``parse_generation_parameters`` (the ``/sdapi/v1/png-info`` result: string values, ``Size-1``/``Size-2``
splits and the defaults A1111 fills in); :meth:`InfotextParams.from_infotext` reads the text back into the
typed fields.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdfleet.a1111.errors import InfotextError
from sdfleet.a1111.prompt import parse_prompt_attention

__all__ = [
    "InfotextParams",
    "InfotextValue",
    "format_hashes",
    "format_infotext",
    "parse_hashes",
    "parse_infotext",
    "quote",
    "unquote",
]

InfotextValue = str | int | float | bool
"""A value in an infotext: written with ``str()``; parsed values are strings, defaults may be ints or bools."""

_NEGATIVE_PREFIX = "Negative prompt:"

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def quote(value: InfotextValue) -> str:
    """Render a value as A1111 does: ``str(value)``, JSON-quoted when it contains ``,``, ``:`` or a newline."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Undo :func:`quote`: a value in double quotes is decoded as JSON when it can be; anything else is as is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def format_hashes(hashes: Mapping[str, str]) -> str:
    """The "Lora hashes"/"TI hashes" value: ``"name: hash, name2: hash2"``; ``:`` and ``,`` are removed from names."""
    return ", ".join(f"{_hash_alias(name)}: {value}" for name, value in hashes.items())


def _hash_alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")


def parse_hashes(text: str) -> dict[str, str]:
    """Parse a "Lora hashes"/"TI hashes" value into ``{name: hash}``, stripping both, as A1111's Lora script does.

    Pieces without a colon are skipped (A1111 would fail on them).
    """
    result: dict[str, str] = {}
    for piece in text.split(","):
        name, colon, value = piece.strip().partition(":")
        if colon:
            result[name.strip()] = value.strip()
    return result


@dataclass(kw_only=True, slots=True)
class InfotextParams:
    """The fields of an A1111 infotext, in the order A1111 writes them.

    Values are written with ``str()``, as A1111 does, so ``cfg_scale=7`` gives "CFG scale: 7" and ``7.0`` gives
    "CFG scale: 7.0" (A1111's API writes the latter). A field left at None is not written; like A1111, "Clip skip"
    is written only above 1, "RNG" only when not "GPU", "Tiling" only when true, and the variation seed only when
    its strength is set and non-zero. ``extra`` holds any other key (``Mask blur``, ``Eta``, extension keys…);
    its entries come after the hires keys and replace a field of the same label in place, as A1111's
    ``extra_generation_params`` do. A value equal to its key is written as the key alone (A1111's flags).
    """

    prompt: str
    negative_prompt: str = ""
    steps: int
    sampler: str
    schedule_type: str | None = None
    cfg_scale: float
    image_cfg_scale: float | None = None
    seed: int
    face_restoration: str | None = None
    width: int
    height: int
    model_hash: str | None = None
    model: str | None = None
    fp8_weight: str | None = None
    cache_fp16_weight_for_lora: bool | None = None
    vae_hash: str | None = None
    vae: str | None = None
    variation_seed: int | None = None
    variation_seed_strength: float | None = None
    seed_resize_from: tuple[int, int] | None = None
    denoising_strength: float | None = None
    conditional_mask_weight: float | None = None
    clip_skip: int = 1
    ensd: int | None = None
    token_merging_ratio: float | None = None
    token_merging_ratio_hr: float | None = None
    init_image_hash: str | None = None
    rng: str = "GPU"
    tiling: bool = False
    hires_checkpoint: str | None = None
    hires_sampler: str | None = None
    hires_prompt: str | None = None
    hires_negative_prompt: str | None = None
    hires_schedule_type: str | None = None
    hires_upscale: float | None = None
    hires_resize: tuple[int, int] | None = None
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    extra: Mapping[str, InfotextValue] = field(default_factory=dict)
    lora_hashes: Mapping[str, str] = field(default_factory=dict)
    ti_hashes: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None
    user: str | None = None

    def pairs(self) -> dict[str, InfotextValue]:
        """The ``Key: value`` pairs of the last line, in order, without the ones that are not written."""
        variation = bool(self.variation_seed_strength)
        pairs: dict[str, InfotextValue | None] = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "Schedule type": self.schedule_type,
            "CFG scale": self.cfg_scale,
            "Image CFG scale": self.image_cfg_scale,
            "Seed": self.seed,
            "Face restoration": self.face_restoration,
            "Size": f"{self.width}x{self.height}",
            "Model hash": self.model_hash,
            "Model": self.model,
            "FP8 weight": self.fp8_weight,
            "Cache FP16 weight for LoRA": self.cache_fp16_weight_for_lora,
            "VAE hash": self.vae_hash,
            "VAE": self.vae,
            "Variation seed": self.variation_seed if variation else None,
            "Variation seed strength": self.variation_seed_strength if variation else None,
            "Seed resize from": _size(self.seed_resize_from),
            "Denoising strength": self.denoising_strength,
            "Conditional mask weight": self.conditional_mask_weight,
            "Clip skip": self.clip_skip if self.clip_skip > 1 else None,
            "ENSD": self.ensd,
            "Token merging ratio": self.token_merging_ratio or None,
            "Token merging ratio hr": self.token_merging_ratio_hr or None,
            "Init image hash": self.init_image_hash,
            "RNG": self.rng if self.rng != "GPU" else None,
            "Tiling": "True" if self.tiling else None,
            "Hires checkpoint": self.hires_checkpoint,
            "Hires sampler": self.hires_sampler,
            "Hires prompt": self.hires_prompt,
            "Hires negative prompt": self.hires_negative_prompt,
            "Hires schedule type": self.hires_schedule_type,
            "Hires upscale": self.hires_upscale,
            "Hires resize": _size(self.hires_resize),
            "Hires steps": self.hires_steps,
            "Hires upscaler": self.hires_upscaler,
        }
        pairs.update(self.extra)
        if self.lora_hashes:
            pairs["Lora hashes"] = format_hashes(self.lora_hashes)
        if self.ti_hashes:
            pairs["TI hashes"] = format_hashes(self.ti_hashes)
        pairs["Version"] = self.version
        pairs["User"] = self.user
        return {key: value for key, value in pairs.items() if value is not None}

    @classmethod
    def from_infotext(cls, text: str) -> InfotextParams:
        """Read an infotext back into typed fields; the inverse of :func:`format_infotext`.

        Only what the text says is used (none of the defaults :func:`parse_infotext` adds); keys that are not
        fields go to ``extra`` as strings. Raises :class:`InfotextError` when Steps, Sampler, CFG scale, Seed or
        Size is missing, or a value does not convert to its field's type.
        """
        prompt, negative_prompt, raw = _split_infotext(text)
        found = dict(_split_sizes(raw))
        size = _read_size(found, "Size")
        missing = [label for label in _REQUIRED if label not in found] + (["Size"] if size is None else [])
        if size is None or missing:
            raise InfotextError(f"infotext has no {', '.join(missing)}")

        values: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative_prompt}
        values["width"], values["height"] = size
        for label, (name, convert) in _FIELD_READERS.items():
            if label in found:
                values[name] = convert(label, found.pop(label))
        for label, name in _SIZE_FIELDS:
            values[name] = _read_size(found, label)
        for label, name in _HASH_FIELDS:
            if label in found:
                values[name] = parse_hashes(found.pop(label))
        return cls(**values, extra=found)


def format_infotext(params: InfotextParams) -> str:
    """The exact A1111 ``parameters`` text for ``params`` (stripped, as A1111 strips it)."""
    line = ", ".join(
        key if key == value else f"{key}: {quote(value)}" for key, value in params.pairs().items()
    )
    negative = f"\n{_NEGATIVE_PREFIX} {params.negative_prompt}" if params.negative_prompt else ""
    return f"{params.prompt}{negative}\n{line}".strip()


def _size(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{size[0]}x{size[1]}"


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


def _split_infotext(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Prompt, negative prompt and the raw (unquoted) key/value pairs of the last line."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""

    # Joined as A1111 joins them: a line is preceded by "\n" only once the text so far is non-empty.
    prompt = negative = ""
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX) :].strip()
        if in_negative:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line

    pairs = []
    for key, value in _PARAM.findall(last):
        if not value:
            continue  # A1111 fails on an empty value and skips the pair
        pairs.append((key, unquote(value) if value[0] == '"' and value[-1] == '"' else value))
    return prompt, negative, pairs


def _split_sizes(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """A1111's ``<int>x<int>`` rule: ``Size: 512x768`` becomes ``Size-1: 512`` and ``Size-2: 768``."""
    for key, value in pairs:
        size = _IMAGE_SIZE.match(value)
        if size is None:
            yield key, value
        else:
            yield f"{key}-1", size.group(1)
            yield f"{key}-2", size.group(2)


_DEFAULTS: tuple[tuple[str, InfotextValue], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_LATE_DEFAULTS: tuple[tuple[str, InfotextValue], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def parse_infotext(text: str, *, skip_fields: Iterable[str] = ()) -> dict[str, InfotextValue]:
    """Parse an infotext as A1111's ``parse_generation_parameters`` does (the ``/sdapi/v1/png-info`` dict).

    The last line holds the parameters only if the key/value pattern matches it at least 3 times; otherwise it
    belongs to the prompt. Lines from the one starting with ``Negative prompt:`` on are the negative prompt.
    Quoted values are decoded; ``WxH`` values become ``<Key>-1``/``<Key>-2``. Parsed values stay strings; the
    prompts are under "Prompt" and "Negative prompt"; A1111's defaults are added for missing keys (``Clip skip``
    "1", ``RNG`` "GPU", ``Schedule type`` "Automatic", ``Hires resize-1``/``-2`` 0, ``Hires sampler``
    "Use same sampler", ``Masked area padding`` 32, …), pre-1.6 hires "First pass size" values are converted,
    and a ``Version`` older than 1.6.0 or 1.7.0-225 turns on A1111's compatibility flags. ``skip_fields`` are
    removed at the end (A1111's ``infotext_skip_pasting`` setting).
    """
    prompt, negative_prompt, pairs = _split_infotext(text)
    res: dict[str, InfotextValue] = dict(_split_sizes(pairs))
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    res.setdefault("Clip skip", "1")
    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] = f"{res['Prompt']}<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, value in _DEFAULTS:
        res.setdefault(key, value)
    _restore_old_hires_fix_params(res)
    for key, value in _LATE_DEFAULTS:
        res.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    if "Emphasis" not in res and _uses_emphasis(prompt, negative_prompt):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    _apply_backcompat(res)

    for key in skip_fields:
        res.pop(key, None)
    return res


def _uses_emphasis(prompt: str, negative_prompt: str) -> bool:
    fragments = parse_prompt_attention(prompt) + parse_prompt_attention(negative_prompt)
    return any(weight != 1.0 and text != "BREAK" for text, weight in fragments)


def _restore_old_hires_fix_params(res: dict[str, InfotextValue]) -> None:
    """Pre-1.0 hires infotexts give the first pass as "First pass size"; convert to Size and Hires resize."""
    first_width, first_height = res.get("First pass size-1"), res.get("First pass size-2")
    if first_width is None or first_height is None:
        return
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    first = int(first_width), int(first_height)
    if 0 in first and width * height:  # A1111 divides by zero on a 0 size
        first = _old_hires_first_pass_size(width, height)
    res["Size-1"], res["Size-2"] = first
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def _old_hires_first_pass_size(width: int, height: int) -> tuple[int, int]:
    """A1111's old automatic first-pass size: about 512x512 pixels, in multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


_VERSION = re.compile(
    r"v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:-(?P<post_n1>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n2>\d*))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev_n>\d*))?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?",
    re.IGNORECASE,
)
_PRE_RANKS = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_VersionKey = tuple[tuple[int, ...], tuple[int, int], int, float]


def _version_key(text: object) -> _VersionKey | None:
    """An ordering key for an infotext "Version" (PEP 440 subset, as A1111 reads it); None if unreadable.

    Like A1111, only the part before the second ``-`` counts: "v1.7.0-225-gabc" is version 1.7.0, post 225.
    """
    if not isinstance(text, str):
        return None
    prefix = re.match(r"([^-]+-[^-]+)-.*", text)
    version = _VERSION.fullmatch((prefix.group(1) if prefix else text).strip())
    if version is None:
        return None
    release = tuple(int(part) for part in version["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    post = version["post_n1"] or version["post_n2"]
    has_post = post is not None
    dev = version["dev_n"]
    if version["pre"]:
        pre = (_PRE_RANKS[version["pre"].lower()], int(version["pre_n"] or 0))
    elif dev is not None and not has_post:
        pre = (-1, 0)
    else:
        pre = (3, 0)
    return release, pre, int(post or 0) if has_post else -1, math.inf if dev is None else int(dev or 0)


_V160 = _version_key("1.6.0")
_V170_TSNR = _version_key("v1.7.0-225")


def _apply_backcompat(res: dict[str, InfotextValue]) -> None:
    """A1111's ``infotext_versions.backcompat`` with its default ``auto_backcompat`` setting on."""
    version = _version_key(res.get("Version"))
    if version is None or _V160 is None or _V170_TSNR is None:
        return
    if version < _V160 and "[" in str(res.get("Prompt", "")):
        res["Old prompt editing timelines"] = True
    if version < _V160 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if version < _V170_TSNR:
        res["Downcast alphas_cumprod"] = True


# --------------------------------------------------------------------------------------------------------------
# Typed reading
# --------------------------------------------------------------------------------------------------------------


def _as_int(label: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise InfotextError(f"{label}: {value!r} is not an integer") from exc


def _as_float(label: str, value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise InfotextError(f"{label}: {value!r} is not a number") from exc


def _as_bool(label: str, value: str) -> bool:
    if value in ("True", "False"):
        return value == "True"
    raise InfotextError(f"{label}: {value!r} is not True or False")


def _as_str(label: str, value: str) -> str:
    return value


def _read_size(pairs: dict[str, str], label: str) -> tuple[int, int] | None:
    if f"{label}-1" not in pairs:
        if label in pairs:
            raise InfotextError(f"{label}: {pairs[label]!r} is not WIDTHxHEIGHT")
        return None
    return _as_int(label, pairs.pop(f"{label}-1")), _as_int(label, pairs.pop(f"{label}-2"))


_FIELD_READERS: dict[str, tuple[str, Callable[[str, str], InfotextValue]]] = {
    "Steps": ("steps", _as_int),
    "Sampler": ("sampler", _as_str),
    "Schedule type": ("schedule_type", _as_str),
    "CFG scale": ("cfg_scale", _as_float),
    "Image CFG scale": ("image_cfg_scale", _as_float),
    "Seed": ("seed", _as_int),
    "Face restoration": ("face_restoration", _as_str),
    "Model hash": ("model_hash", _as_str),
    "Model": ("model", _as_str),
    "FP8 weight": ("fp8_weight", _as_str),
    "Cache FP16 weight for LoRA": ("cache_fp16_weight_for_lora", _as_bool),
    "VAE hash": ("vae_hash", _as_str),
    "VAE": ("vae", _as_str),
    "Variation seed": ("variation_seed", _as_int),
    "Variation seed strength": ("variation_seed_strength", _as_float),
    "Denoising strength": ("denoising_strength", _as_float),
    "Conditional mask weight": ("conditional_mask_weight", _as_float),
    "Clip skip": ("clip_skip", _as_int),
    "ENSD": ("ensd", _as_int),
    "Token merging ratio": ("token_merging_ratio", _as_float),
    "Token merging ratio hr": ("token_merging_ratio_hr", _as_float),
    "Init image hash": ("init_image_hash", _as_str),
    "RNG": ("rng", _as_str),
    "Tiling": ("tiling", _as_bool),
    "Hires checkpoint": ("hires_checkpoint", _as_str),
    "Hires sampler": ("hires_sampler", _as_str),
    "Hires prompt": ("hires_prompt", _as_str),
    "Hires negative prompt": ("hires_negative_prompt", _as_str),
    "Hires schedule type": ("hires_schedule_type", _as_str),
    "Hires upscale": ("hires_upscale", _as_float),
    "Hires steps": ("hires_steps", _as_int),
    "Hires upscaler": ("hires_upscaler", _as_str),
    "Version": ("version", _as_str),
    "User": ("user", _as_str),
}
"""Infotext label → (:class:`InfotextParams` field, converter) for the scalar fields."""

_SIZE_FIELDS = (("Seed resize from", "seed_resize_from"), ("Hires resize", "hires_resize"))
_HASH_FIELDS = (("Lora hashes", "lora_hashes"), ("TI hashes", "ti_hashes"))
_REQUIRED = ("Steps", "Sampler", "CFG scale", "Seed")
