"""A1111's X/Y/Z plot (``scripts/xyz_grid.py``, 1.10) as a batch of ordinary jobs: its axis table (the
``x_type``/``y_type``/``z_type`` indices are positions in the tab's list, as A1111's dropdowns answer them),
the axis values with A1111's range syntax (``1-5``, ``1-10 (+2)``, ``0-1 [5]``), and the plan of one job per
cell (:func:`plan_xyz`). Pure: the route submits the variants and draws the grid."""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.errors import UnknownNameError
from sdfleet.a1111.samplers import SCHEDULERS, resolve_sampler, scheduler_by_name
from sdfleet.a1111.script_args import ArgSpec, Variant, arg_error

__all__ = ["AXES", "XyzPlan", "axes_for", "plan_xyz", "xyz_arg_specs"]

ValueType = Literal["nothing", "int", "float", "str", "permutations"]
Label = Literal["label", "value", "path", "join", "nothing"]
Tab = Literal["both", "txt2img", "img2img"]


@dataclass(slots=True)
class _Cell:
    """What the axes change for one cell, starting from the request's values."""

    variant: Variant
    prompt: str
    negative_prompt: str
    steps: int

    def set(self, name: str, value: Any) -> None:
        self.variant.fields[name] = value

    def override(self, name: str, value: Any) -> None:
        self.variant.settings[name] = value


Apply = Callable[[_Cell, Any, Sequence[Any]], None]
Confirm = Callable[[Sequence[Any], Catalog], str | None]


@dataclass(frozen=True, slots=True)
class Axis:
    """One row of A1111's ``axis_options``."""

    label: str
    type: ValueType
    apply: Apply
    label_format: Label = "label"
    tab: Tab = "both"
    choices: bool = False
    confirm: Confirm | None = None


def _field(name: str) -> Apply:
    return lambda cell, x, _: cell.set(name, x)


def _override(name: str, boolean: bool = False) -> Apply:
    def apply(cell: _Cell, x: Any, _: Sequence[Any]) -> None:
        cell.override(name, str(x).lower() == "true" if boolean else x)

    return apply


def _nothing(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    return None


def _prompt_sr(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    find = str(xs[0])
    if find not in cell.prompt and find not in cell.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {find} in prompt or negative prompt.")
    cell.prompt = cell.prompt.replace(find, str(x))
    cell.negative_prompt = cell.negative_prompt.replace(find, str(x))
    cell.set("prompt", cell.prompt)
    cell.set("negative_prompt", cell.negative_prompt)


def _prompt_order(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    tokens = list(x)
    order = sorted(((cell.prompt.find(token), token) for token in tokens), key=lambda t: t[0])
    parts: list[str] = []
    rest = cell.prompt
    for _, token in order:
        n = rest.find(token)
        parts.append(rest[:n])
        rest = rest[n + len(token) :]
    cell.prompt = "".join(part + tokens[i] for i, part in enumerate(parts)) + rest
    cell.set("prompt", cell.prompt)


def _checkpoint(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    cell.override("sd_model_checkpoint", str(x))


def _vae(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    name = str(x).strip()
    if name.lower() in ("auto", "automatic"):
        name = "Automatic"
    elif name.lower() == "none":
        name = "None"
    cell.override("sd_vae", name)


def _styles(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    styles = list(cell.variant.fields.get("styles") or [])
    cell.set("styles", styles + str(x).split(","))


def _unipc_order(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    cell.override("uni_pc_order", min(int(x), cell.steps - 1))


def _face_restore(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    option = str(x).lower()
    if option in ("codeformer", "gfpgan"):
        cell.override("face_restoration_model", "CodeFormer" if option == "codeformer" else "GFPGAN")
        cell.set("restore_faces", True)
    else:
        cell.set("restore_faces", option in ("true", "yes", "y", "1"))


def _size(cell: _Cell, x: Any, xs: Sequence[Any]) -> None:
    width, _, height = str(x).partition("x")
    try:
        cell.set("width", int(width.strip()))
        cell.set("height", int(height.strip()))
    except ValueError as exc:
        raise ValueError(f"Invalid size in XYZ plot: {x} (write WIDTHxHEIGHT)") from exc


def _confirm_samplers(values: Sequence[Any], _: Catalog) -> str | None:
    for value in values:
        try:
            resolve_sampler(str(value))
        except UnknownNameError:
            return f"Unknown sampler: {value}"
    return None


def _confirm_checkpoints(values: Sequence[Any], catalog: Catalog) -> str | None:
    for value in values:
        if catalog.checkpoint(str(value)) is None:
            return f"Unknown checkpoint: {value}"
    return None


def _confirm_checkpoints_or_none(values: Sequence[Any], catalog: Catalog) -> str | None:
    return _confirm_checkpoints([v for v in values if v not in (None, "", "None", "none")], catalog)


def _confirm_schedulers(values: Sequence[Any], _: Catalog) -> str | None:
    for value in values:
        try:
            scheduler_by_name(str(value))
        except KeyError:
            return f"Unknown schedule type: {value} ({', '.join(s.label for s in SCHEDULERS)})"
    return None


AXES: tuple[Axis, ...] = (
    Axis("Nothing", "nothing", _nothing, label_format="nothing"),
    Axis("Seed", "int", _field("seed")),
    Axis("Var. seed", "int", _field("subseed")),
    Axis("Var. strength", "float", _field("subseed_strength")),
    Axis("Steps", "int", _field("steps")),
    Axis("Hires steps", "int", _field("hr_second_pass_steps"), tab="txt2img"),
    Axis("CFG Scale", "float", _field("cfg_scale")),
    Axis("Image CFG Scale", "float", _field("image_cfg_scale"), tab="img2img"),
    Axis("Prompt S/R", "str", _prompt_sr, label_format="value"),
    Axis("Prompt order", "permutations", _prompt_order, label_format="join"),
    Axis(
        "Sampler",
        "str",
        _field("sampler_name"),
        label_format="value",
        tab="txt2img",
        choices=True,
        confirm=_confirm_samplers,
    ),
    Axis(
        "Hires sampler",
        "str",
        _field("hr_sampler_name"),
        tab="txt2img",
        choices=True,
        confirm=_confirm_samplers,
    ),
    Axis(
        "Sampler",
        "str",
        _field("sampler_name"),
        label_format="value",
        tab="img2img",
        choices=True,
        confirm=_confirm_samplers,
    ),
    Axis(
        "Checkpoint name",
        "str",
        _checkpoint,
        label_format="path",
        choices=True,
        confirm=_confirm_checkpoints,
    ),
    Axis("Negative Guidance minimum sigma", "float", _field("s_min_uncond")),
    Axis("Sigma Churn", "float", _field("s_churn")),
    Axis("Sigma min", "float", _field("s_tmin")),
    Axis("Sigma max", "float", _field("s_tmax")),
    Axis("Sigma noise", "float", _field("s_noise")),
    Axis("Schedule type", "str", _field("scheduler"), choices=True, confirm=_confirm_schedulers),
    Axis("Schedule min sigma", "float", _override("sigma_min")),
    Axis("Schedule max sigma", "float", _override("sigma_max")),
    Axis("Schedule rho", "float", _override("rho")),
    Axis("Skip Early CFG", "float", _override("skip_early_cond")),
    Axis("Beta schedule alpha", "float", _override("beta_dist_alpha")),
    Axis("Beta schedule beta", "float", _override("beta_dist_beta")),
    Axis("Eta", "float", _field("eta")),
    Axis("Clip skip", "int", _override("CLIP_stop_at_last_layers")),
    Axis("Denoising", "float", _field("denoising_strength")),
    Axis("Initial noise multiplier", "float", _override("initial_noise_multiplier")),
    Axis("Extra noise", "float", _override("img2img_extra_noise")),
    Axis("Hires upscaler", "str", _field("hr_upscaler"), tab="txt2img", choices=True),
    Axis("Cond. Image Mask Weight", "float", _override("inpainting_mask_weight"), tab="img2img"),
    Axis("VAE", "str", _vae, choices=True),
    Axis("Styles", "str", _styles, choices=True),
    Axis("UniPC Order", "int", _unipc_order),
    Axis("Face restore", "str", _face_restore, label_format="value"),
    Axis("Token merging ratio", "float", _override("token_merging_ratio")),
    Axis("Token merging ratio high-res", "float", _override("token_merging_ratio_hr")),
    Axis(
        "Always discard next-to-last sigma",
        "str",
        _override("always_discard_next_to_last_sigma", boolean=True),
        choices=True,
    ),
    Axis("SGM noise multiplier", "str", _override("sgm_noise_multiplier", boolean=True), choices=True),
    Axis(
        "Refiner checkpoint",
        "str",
        _field("refiner_checkpoint"),
        label_format="path",
        choices=True,
        confirm=_confirm_checkpoints_or_none,
    ),
    Axis("Refiner switch at", "float", _field("refiner_switch_at")),
    Axis("RNG source", "str", _override("randn_source"), choices=True),
    Axis("FP8 mode", "str", _override("fp8_storage"), choices=True),
    Axis("Size", "str", _size),
    # sdfleet's own, after A1111's so that A1111's indices stay as they are
    Axis("Width", "int", _field("width")),
    Axis("Height", "int", _field("height")),
)
"""A1111 1.10's ``axis_options``, in its order, then Width and Height (sdfleet's: A1111 has only Size)."""


def axes_for(is_img2img: bool) -> tuple[Axis, ...]:
    """The axes of one tab (A1111's ``current_axis_options``): the indices ``x_type`` and the others take."""
    skip = "txt2img" if is_img2img else "img2img"
    return tuple(axis for axis in AXES if axis.tab != skip)


def xyz_arg_specs(is_img2img: bool) -> tuple[ArgSpec, ...]:
    """``ui()``'s components in order: type, values and values-dropdown for X, Y and Z, then the options."""
    labels = tuple(axis.label for axis in axes_for(is_img2img))
    specs: list[ArgSpec] = []
    for name, default in (("X", 1), ("Y", 0), ("Z", 0)):
        specs += [
            ArgSpec(f"{name} type", labels[default], "index", choices=labels),
            ArgSpec(f"{name} values", "", "text"),
            ArgSpec(f"{name} values", (), "multi", choices=()),
        ]
    specs += [
        ArgSpec("Draw legend", True, "bool"),
        ArgSpec("Include Sub Images", False, "bool"),
        ArgSpec("Include Sub Grids", False, "bool"),
        ArgSpec("Keep -1 for seeds", False, "bool"),
        ArgSpec("Vary seeds for X", False, "bool"),
        ArgSpec("Vary seeds for Y", False, "bool"),
        ArgSpec("Vary seeds for Z", False, "bool"),
        ArgSpec("Grid margins (px)", 0, "int", minimum=0, maximum=500, step=2),
        ArgSpec("Use text inputs instead of dropdowns", False, "bool"),
    ]
    return tuple(specs)


_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_FLOAT_RANGE = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*"
)
_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?\s*")
_FLOAT_COUNT = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*\])?\s*"
)
MAX_AXIS_VALUES = 1000
"""The most values one axis may expand to (a range like ``1-1000000`` is refused, not expanded)."""


def _num(text: str) -> float:
    return float(text.replace(" ", ""))


def _linspace(start: float, stop: float, num: int) -> list[float]:
    if num <= 1:
        return [start] if num == 1 else []
    return [start + (stop - start) * i / (num - 1) for i in range(num)]


def _expand(kind: ValueType, values: list[str]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if not value.strip():
            continue
        if kind == "int" and (m := _INT_RANGE.fullmatch(value)):
            start, end = int(_num(m.group(1))), int(_num(m.group(2))) + 1
            step = int(m.group(3)) if m.group(3) else 1
            out += _bounded(range(start, end, step) if step else range(0))
        elif kind == "int" and (m := _INT_COUNT.fullmatch(value)):
            count = int(m.group(3)) if m.group(3) else 1
            out += [int(x) for x in _linspace(_num(m.group(1)), _num(m.group(2)), _bounded_count(count))]
        elif kind == "float" and (m := _FLOAT_RANGE.fullmatch(value)):
            low, high = _num(m.group(1)), _num(m.group(2))
            by = float(m.group(3)) if m.group(3) else 1.0
            if by == 0 or (high - low) / by + 1 > MAX_AXIS_VALUES:
                raise ValueError(f"the range {value!r} has more than {MAX_AXIS_VALUES} values")
            n = math.ceil((high + by - low) / by - 1e-9)
            out += [low + i * by for i in range(max(0, n))]
        elif kind == "float" and (m := _FLOAT_COUNT.fullmatch(value)):
            count = int(float(m.group(3))) if m.group(3) else 1
            out += _linspace(_num(m.group(1)), _num(m.group(2)), _bounded_count(count))
        else:
            out.append(value)
        if len(out) > MAX_AXIS_VALUES:
            raise ValueError(f"an axis may have at most {MAX_AXIS_VALUES} values")
    return out


def _bounded(values: range) -> list[int]:
    if len(values) > MAX_AXIS_VALUES:
        raise ValueError(f"the range has {len(values)} values, the limit is {MAX_AXIS_VALUES}")
    return list(values)


def _bounded_count(count: int) -> int:
    if count > MAX_AXIS_VALUES:
        raise ValueError(f"a range of {count} values is more than the limit of {MAX_AXIS_VALUES}")
    return count


def _convert(kind: ValueType, value: Any) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


def _csv(text: str) -> list[str]:
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [cell.strip() for cell in itertools.chain.from_iterable(rows)]


def axis_values(axis: Axis, text: str, dropdown: list[str], csv_mode: bool, catalog: Catalog) -> list[Any]:
    """A1111's ``process_axis``: the values of one axis, range syntax expanded and converted to the axis's
    type, then confirmed (samplers, checkpoints). Raises ValueError with A1111's message."""
    if axis.type == "nothing":
        return [0]
    raw = list(dropdown) if axis.choices and not csv_mode and dropdown else _csv(text)
    if axis.type == "permutations":
        values: list[Any] = list(itertools.permutations(raw))
        if len(values) > MAX_AXIS_VALUES:
            raise ValueError(f"Prompt order has {len(values)} permutations, the limit is {MAX_AXIS_VALUES}")
    else:
        try:
            values = [_convert(axis.type, v) for v in _expand(axis.type, raw)]
        except (TypeError, OverflowError) as exc:
            raise ValueError(str(exc)) from exc
    if not values:
        raise ValueError(f"{axis.label} has no values")
    if axis.confirm is not None:
        problem = axis.confirm(values, catalog)
        if problem:
            raise ValueError(problem)
    return values


def _label(axis: Axis, value: Any) -> str:
    if axis.label_format == "nothing":
        return ""
    if axis.label_format == "join":
        return ", ".join(value)
    if axis.label_format == "path":
        return os.path.basename(str(value))
    if isinstance(value, float):
        value = round(value, 8)
    return str(value) if axis.label_format == "value" else f"{axis.label}: {value}"


@dataclass(frozen=True, slots=True)
class XyzPlan:
    """The cells of an X/Y/Z plot: ``variants[ix + iy * nx + iz * nx * ny]``, the axes' labels, the grid's
    options, and what the grid's infotext adds (A1111's ``Script``, ``X Type``, ``X Values``…)."""

    variants: list[Variant]
    x_labels: list[str]
    y_labels: list[str]
    z_labels: list[str]
    draw_legend: bool
    include_lone_images: bool
    include_sub_grids: bool
    margin: int
    infotext: dict[str, str]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nx, ny, nz)``."""
        return len(self.x_labels), len(self.y_labels), len(self.z_labels)


def plan_xyz(
    args: Sequence[Any],
    *,
    is_img2img: bool,
    prompt: str,
    negative_prompt: str,
    steps: int,
    seed: int,
    catalog: Catalog,
) -> XyzPlan:
    """One variant per cell, as A1111's ``run`` applies the axes to a copy of the request: X, then Y, then Z,
    then the seed (``seed`` is the request's, fixed once unless "Keep -1 for seeds"; "Vary seeds" adds the
    cell's position). Bad axis values are a 422 naming the argument."""
    axes = axes_for(is_img2img)
    (x_type, x_text, x_drop, y_type, y_text, y_drop, z_type, z_text, z_drop) = args[:9]
    draw_legend, lone, sub_grids, _keep_seeds, vary_x, vary_y, vary_z, margin, csv_mode = args[9:18]
    chosen: list[tuple[Axis, list[Any]]] = []
    for offset, (type_index, text, dropdown) in enumerate(
        ((x_type, x_text, x_drop), (y_type, y_text, y_drop), (z_type, z_text, z_drop))
    ):
        axis = axes[int(type_index)]
        try:
            values = axis_values(axis, str(text), list(dropdown), bool(csv_mode), catalog)
        except ValueError as exc:
            raise arg_error(offset * 3 + 1, str(exc)) from exc
        chosen.append((axis, values))
    (x_axis, xs), (y_axis, ys), (z_axis, zs) = chosen
    variants: list[Variant] = []
    for iz, z in enumerate(zs):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                cell = _Cell(Variant(), prompt=prompt, negative_prompt=negative_prompt, steps=steps)
                cell.set("seed", seed)
                for offset, (axis, value, values) in enumerate(
                    ((x_axis, x, xs), (y_axis, y, ys), (z_axis, z, zs))
                ):
                    try:
                        axis.apply(cell, value, values)
                    except ValueError as exc:
                        raise arg_error(offset * 3 + 1, str(exc)) from exc
                xdim = len(xs) if vary_x else 1
                ydim = len(ys) if vary_y else 1
                shift = (
                    (ix if vary_x else 0) + (iy * xdim if vary_y else 0) + (iz * xdim * ydim if vary_z else 0)
                )
                if shift:
                    cell.set("seed", int(cell.variant.fields["seed"]) + shift)
                variants.append(cell.variant)
    infotext = {"Script": "X/Y/Z plot"}
    for name, (axis, _values), text in (
        ("X", chosen[0], x_text),
        ("Y", chosen[1], y_text),
        ("Z", chosen[2], z_text),
    ):
        if axis.type != "nothing":
            infotext[f"{name} Type"] = axis.label
            infotext[f"{name} Values"] = str(text) if text else ", ".join(map(str, _values))
    return XyzPlan(
        variants=variants,
        x_labels=[_label(x_axis, x) for x in xs],
        y_labels=[_label(y_axis, y) for y in ys],
        z_labels=[_label(z_axis, z) for z in zs],
        draw_legend=bool(draw_legend),
        include_lone_images=bool(lone),
        include_sub_grids=bool(sub_grids),
        margin=int(margin),
        infotext=infotext,
    )
