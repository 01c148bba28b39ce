"""A1111's selectable scripts (``script_name`` + ``script_args``) that run here as batches of ordinary
generation jobs: their table for ``/sdapi/v1/scripts`` and ``/sdapi/v1/script-info``
(:data:`SELECTABLE_SCRIPTS`, each with its ``ui()`` arguments in order), and the plans of Prompt matrix,
Prompts from file or textbox and Loopback (X/Y/Z plot is :mod:`sdfleet.a1111.xyz`, Poor man's outpainting
:mod:`sdfleet.a1111.outpaint`, Outpainting mk2 :mod:`sdfleet.a1111.outpaint_mk2`). Pure: the route maps each
:class:`~sdfleet.a1111.script_args.Variant` to a job, waits for them all and draws the grid
(:mod:`sdfleet.a1111.grids`).

A script that is not in this table (or not on the request's tab, like Loopback on txt2img) is A1111's 422
"Script '…' not found"."""

from __future__ import annotations

import math
import random
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.errors import UnknownNameError
from sdfleet.a1111.outpaint import poor_mans_arg_specs
from sdfleet.a1111.outpaint_mk2 import mk2_arg_specs
from sdfleet.a1111.samplers import resolve_sampler
from sdfleet.a1111.script_args import ArgSpec, Variant, arg_error
from sdfleet.a1111.xyz import xyz_arg_specs
from sdfleet.errors import ValidationError

__all__ = [
    "LOOPBACK",
    "OUTPAINTING_MK2",
    "POOR_MANS_OUTPAINTING",
    "PROMPTS_FROM_FILE",
    "PROMPT_MATRIX",
    "SD_UPSCALE",
    "SEED_RANGE",
    "SELECTABLE_SCRIPTS",
    "XYZ_PLOT",
    "LoopbackPlan",
    "PromptMatrixPlan",
    "SelectableScript",
    "find_script",
    "plan_loopback",
    "plan_prompt_matrix",
    "plan_prompts_from_file",
    "selectable_scripts",
]

SEED_RANGE = 4294967294
"""A1111's ``fix_seed`` draws a random seed with ``random.randrange(4294967294)``."""


@dataclass(frozen=True, slots=True)
class SelectableScript:
    """A script ``script_name`` may name: its title (matched in any case), the tabs it shows on, and its
    arguments per tab (``arg_specs(is_img2img)``, ``ui()``'s order)."""

    title: str
    on_txt2img: bool
    on_img2img: bool
    arg_specs: Callable[[bool], tuple[ArgSpec, ...]]

    @property
    def name(self) -> str:
        """The name A1111 lists it by: the title in lower case."""
        return self.title.lower()

    def shows_on(self, is_img2img: bool) -> bool:
        """Whether the script is on that tab (A1111's ``show(is_img2img)``)."""
        return self.on_img2img if is_img2img else self.on_txt2img


def _loopback_specs(_: bool) -> tuple[ArgSpec, ...]:
    return (
        ArgSpec("Loops", 4, "int", minimum=1, maximum=32, step=1),
        ArgSpec("Final denoising strength", 0.5, "number", minimum=0, maximum=1, step=0.01),
        ArgSpec("Denoising strength curve", "Linear", "choice", choices=("Aggressive", "Linear", "Lazy")),
        ArgSpec(
            "Append interrogated prompt at each iteration",
            "None",
            "choice",
            choices=("None", "CLIP", "DeepBooru"),
        ),
    )


def _prompt_matrix_specs(_: bool) -> tuple[ArgSpec, ...]:
    return (
        ArgSpec("Put variable parts at start of prompt", False, "bool"),
        ArgSpec("Use different seed for each picture", False, "bool"),
        ArgSpec("Select prompt", "positive", "choice", choices=("positive", "negative")),
        ArgSpec("Select joining char", "comma", "choice", choices=("comma", "space")),
        ArgSpec("Grid margins (px)", 0, "int", minimum=0, maximum=500, step=2),
    )


def _prompts_from_file_specs(_: bool) -> tuple[ArgSpec, ...]:
    return (
        ArgSpec("Iterate seed every line", False, "bool"),
        ArgSpec("Use same random seed for all lines", False, "bool"),
        ArgSpec("Insert prompts at the", "start", "choice", choices=("start", "end")),
        ArgSpec("List of prompt inputs", "", "text"),
    )


def _sd_upscale_specs(_: bool) -> tuple[ArgSpec, ...]:
    return (
        ArgSpec(
            "Info",
            "<p>Will upscale the image by the selected scale factor; tiles are the width and height"
            " set above</p>",
            "text",
        ),
        ArgSpec("Tile overlap", 64, "int", minimum=0, maximum=256, step=16),
        # A1111 answers the index into its upscaler list; here also its name (the list is /sdapi/v1/upscalers)
        ArgSpec("Upscaler", "None", "raw"),
        ArgSpec("Scale Factor", 2.0, "number", minimum=1.0, maximum=4.0, step=0.05),
    )


LOOPBACK = SelectableScript("Loopback", False, True, _loopback_specs)
SD_UPSCALE = SelectableScript("SD upscale", False, True, _sd_upscale_specs)
OUTPAINTING_MK2 = SelectableScript("Outpainting mk2", False, True, mk2_arg_specs)
POOR_MANS_OUTPAINTING = SelectableScript("Poor man's outpainting", False, True, poor_mans_arg_specs)
PROMPT_MATRIX = SelectableScript("Prompt matrix", True, True, _prompt_matrix_specs)
PROMPTS_FROM_FILE = SelectableScript("Prompts from file or textbox", True, True, _prompts_from_file_specs)
XYZ_PLOT = SelectableScript("X/Y/Z plot", True, True, xyz_arg_specs)

SELECTABLE_SCRIPTS: tuple[SelectableScript, ...] = (
    LOOPBACK,
    OUTPAINTING_MK2,
    POOR_MANS_OUTPAINTING,
    PROMPT_MATRIX,
    PROMPTS_FROM_FILE,
    SD_UPSCALE,
    XYZ_PLOT,
)
"""The selectable scripts this server runs, in A1111's order (its ``scripts/`` folder's file names)."""


def selectable_scripts(is_img2img: bool) -> tuple[SelectableScript, ...]:
    """The selectable scripts of one tab."""
    return tuple(s for s in SELECTABLE_SCRIPTS if s.shows_on(is_img2img))


def find_script(name: str, is_img2img: bool) -> SelectableScript:
    """The script ``script_name`` names on that tab (any case), else A1111's 422 "Script '…' not found"."""
    for script in selectable_scripts(is_img2img):
        if script.name == name.strip().lower():
            return script
    raise ValidationError(f"Script '{name}' not found", field="script_name")


# ===================================================================== Prompt matrix


@dataclass(frozen=True, slots=True)
class PromptMatrixPlan:
    """One job per combination of the prompt's ``|`` parts, and how the grid is laid out: A1111's
    ``image_grid(images, rows=1 << ((len(parts) - 1) // 2))`` labelled by ``draw_prompt_matrix``."""

    variants: list[Variant]
    parts: list[str]
    margin: int

    @property
    def rows(self) -> int:
        """The grid's rows."""
        return 1 << ((len(self.parts) - 1) // 2)


def plan_prompt_matrix(
    args: Sequence[Any], *, prompt: str, negative_prompt: str, seed: int, subseed: int, max_jobs: int
) -> PromptMatrixPlan:
    """A1111's Prompt matrix: the first ``|`` part always, each combination of the others joined to it
    (bit ``n`` of combination ``c`` picks part ``n + 1``); one seed for all, or seed + i."""
    put_at_start, different_seeds, prompt_type, delimiter_name, margin = args[:5]
    text = prompt if prompt_type == "positive" else negative_prompt
    parts = text.split("|")
    count = 2 ** (len(parts) - 1)
    if count > max_jobs:
        field_name = "prompt" if prompt_type == "positive" else "negative_prompt"
        raise ValidationError(
            f"{field_name}: a prompt matrix of {len(parts) - 1} parts is {count} images, the limit is {max_jobs}",
            field=field_name,
        )
    delimiter = ", " if delimiter_name == "comma" else " "
    variants = []
    for combination in range(count):
        selected = [t.strip().strip(",") for n, t in enumerate(parts[1:]) if combination & (1 << n)]
        selected = [*selected, parts[0]] if put_at_start else [parts[0], *selected]
        key = "prompt" if prompt_type == "positive" else "negative_prompt"
        fields = {
            key: delimiter.join(selected),
            "seed": seed + (combination if different_seeds else 0),
            "subseed": subseed + combination,
            "batch_size": 1,
            "n_iter": 1,
        }
        variants.append(Variant(fields=fields))
    return PromptMatrixPlan(variants=variants, parts=parts, margin=int(margin))


# ===================================================================== Prompts from file or textbox


def _text(value: str) -> str:
    return value


def _int_tag(value: str) -> int:
    return int(value)


def _float_tag(value: str) -> float:
    return float(value)


def _bool_tag(value: str) -> bool:
    return value == "true"


_LINE_TAGS: dict[str, Callable[[str], Any]] = {
    "sd_model": _text,
    "outpath_samples": _text,
    "outpath_grids": _text,
    "prompt_for_display": _text,
    "prompt": _text,
    "negative_prompt": _text,
    "styles": _text,
    "seed": _int_tag,
    "subseed_strength": _float_tag,
    "subseed": _int_tag,
    "seed_resize_from_h": _int_tag,
    "seed_resize_from_w": _int_tag,
    "sampler_index": _int_tag,
    "sampler_name": _text,
    "batch_size": _int_tag,
    "n_iter": _int_tag,
    "steps": _int_tag,
    "cfg_scale": _float_tag,
    "width": _int_tag,
    "height": _int_tag,
    "restore_faces": _bool_tag,
    "tiling": _bool_tag,
    "do_not_save_samples": _bool_tag,
    "do_not_save_grid": _bool_tag,
}
"""A1111's ``prompt_tags``: the ``--name value`` options a line may carry."""

_IGNORED_TAGS = frozenset(
    {"outpath_samples", "outpath_grids", "prompt_for_display", "do_not_save_samples", "do_not_save_grid"}
)


def parse_prompt_line(line: str) -> dict[str, Any]:
    """A1111's ``cmdargs``: ``--prompt "a cat" --steps 10 --negative_prompt blurry`` as a dict. A prompt runs
    to the next ``--option`` (unquoted words are joined with spaces). Raises ValueError as A1111 asserts."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot split the line: {exc}") from exc
    pos, found = 0, {}
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise ValueError(f'must start with "--": {word}')
        if pos + 1 >= len(words):
            raise ValueError(f"missing argument for command line option {word}")
        tag = word[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            text = words[pos]
            pos += 1
            while pos < len(words) and not words[pos].startswith("--"):
                text += " " + words[pos]
                pos += 1
            found[tag] = text
            continue
        convert = _LINE_TAGS.get(tag)
        if convert is None:
            raise ValueError(f"unknown commandline option: {word}")
        try:
            found[tag] = convert(words[pos + 1])
        except ValueError as exc:
            raise ValueError(f"{word}: {words[pos + 1]!r} is not a valid value") from exc
        pos += 2
    return found


def plan_prompts_from_file(
    args: Sequence[Any],
    *,
    prompt: str,
    negative_prompt: str,
    seed: int,
    batch_size: int,
    n_iter: int,
    catalog: Catalog,
    rng: random.Random,
    max_jobs: int,
) -> list[Variant]:
    """One job per non-empty line, as A1111's script runs a copy of the request per line: a plain line is the
    prompt; a line with ``--`` carries options (:func:`parse_prompt_line`). The line's prompt goes before
    the request's prompt ("start") or after it ("end"). With "Iterate seed every line" each line's seed is
    the previous one's plus the request's batch size × batch count; with either seed option a seed of -1 is
    drawn once; otherwise every line with seed -1 draws its own. A bad line is a 422 naming script_args.3."""
    iterate, same_seed, position, text = args[:4]
    lines = [line for line in (raw.strip() for raw in str(text).splitlines()) if line]
    if not lines:
        raise arg_error(3, "List of prompt inputs has no lines")
    if len(lines) > max_jobs:
        raise arg_error(3, f"List of prompt inputs has {len(lines)} lines, the limit is {max_jobs}")
    if (iterate or same_seed) and seed == -1:
        seed = rng.randrange(SEED_RANGE)
    variants = []
    for number, line in enumerate(lines, start=1):
        try:
            options = parse_prompt_line(line) if "--" in line else {"prompt": line}
            variant = _line_variant(options, catalog)
        except ValueError as exc:
            raise arg_error(3, f"line {number}: {exc}") from exc
        variant.fields.setdefault("seed", seed)
        for key, own in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            line_text = options.get(key)
            if line_text and own:
                variant.fields[key] = f"{line_text} {own}" if position == "start" else f"{own} {line_text}"
        variants.append(variant)
        if iterate and seed != -1:
            seed += batch_size * n_iter
    return variants


def _line_variant(options: dict[str, Any], catalog: Catalog) -> Variant:
    variant = Variant()
    for key, value in options.items():
        if key in _IGNORED_TAGS or key == "sampler_index":  # the API's sampler is sampler_name's
            continue
        if key == "sd_model":
            found = catalog.checkpoint(str(value))
            if found is None:
                raise ValueError(f"Unknown checkpoint: {value}")
            variant.settings["sd_model_checkpoint"] = found.name
        elif key == "sampler_name":
            try:
                resolve_sampler(str(value))
            except UnknownNameError as exc:
                raise ValueError(f"unknown sampler: {value}") from exc
            variant.fields[key] = value
        elif key == "styles":
            variant.fields[key] = [value]
        else:
            variant.fields[key] = value
    return variant


# ===================================================================== Loopback


@dataclass(frozen=True, slots=True)
class LoopbackPlan:
    """A1111's Loopback: ``loops`` img2img passes per batch, each fed the previous output, the denoising
    strength moving from the request's to ``final_denoising`` along ``curve``."""

    loops: int
    final_denoising: float
    curve: str
    notes: list[str] = field(default_factory=list)

    def strength(self, initial: float, loop: int) -> float:
        """The denoising strength of pass ``loop`` (0-based; pass 0 uses the request's)."""
        if self.loops == 1:
            return initial
        progress = loop / (self.loops - 1)
        if self.curve == "Aggressive":
            shape = math.sin(progress * math.pi * 0.5)
        elif self.curve == "Lazy":
            shape = 1 - math.cos(progress * math.pi * 0.5)
        else:
            shape = progress
        return initial + (self.final_denoising - initial) * shape


def plan_loopback(args: Sequence[Any]) -> LoopbackPlan:
    """Loopback's arguments as a plan (interrogation is not available here: the prompt stays)."""
    loops, final, curve, interrogate = args[:4]
    notes = []
    if interrogate != "None":
        notes.append(
            f"Loopback: appending a {interrogate} interrogation is not supported; the prompt was kept"
        )
    return LoopbackPlan(loops=int(loops), final_denoising=float(final), curve=str(curve), notes=notes)
