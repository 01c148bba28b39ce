"""The pure parts of A1111's selectable scripts: their arguments (defaults, kinds, the 422 naming
``script_args.N``), Prompts from file's line options, Prompt matrix's combinations, X/Y/Z plot's axes and
range syntax, Loopback's denoising curve, and the grids drawn with PIL."""

from __future__ import annotations

import random
from typing import Any

import pytest
from PIL import Image, ImageChops

from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.grids import (
    GridAnnotation,
    GridColours,
    combine_grid,
    draw_grid_annotations,
    grid_fits,
    image_grid,
    split_grid,
)
from sdfleet.a1111.outpaint import plan_poor_mans_outpainting
from sdfleet.a1111.script_args import read_script_args
from sdfleet.a1111.scripts import (
    LOOPBACK,
    PROMPT_MATRIX,
    PROMPTS_FROM_FILE,
    XYZ_PLOT,
    find_script,
    parse_prompt_line,
    plan_loopback,
    plan_prompt_matrix,
    plan_prompts_from_file,
)
from sdfleet.a1111.xyz import axes_for, axis_values, plan_xyz
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.errors import ValidationError

EMPTY = Catalog()


def _args(script: Any, given: list[Any], is_img2img: bool = False) -> list[Any]:
    return read_script_args(script.title, script.arg_specs(is_img2img), given)[0]


def test_scripts_are_found_in_any_case_on_their_tabs_only() -> None:
    assert find_script("X/Y/Z PLOT", False) is XYZ_PLOT
    assert find_script(" prompt matrix ", True) is PROMPT_MATRIX
    assert find_script("Loopback", True) is LOOPBACK
    for name, img2img in (("loopback", False), ("sd upscale", False), ("nope", False)):
        with pytest.raises(ValidationError, match=f"Script '{name}' not found"):
            find_script(name, img2img)


def test_missing_script_args_take_the_ui_defaults_and_extra_ones_are_noted() -> None:
    assert _args(PROMPT_MATRIX, []) == [False, False, "positive", "comma", 0]
    assert _args(PROMPT_MATRIX, [True, 1]) == [True, True, "positive", "comma", 0]
    assert _args(LOOPBACK, [2], True) == [2, 0.5, "Linear", "None"]
    xyz = _args(XYZ_PLOT, ["steps", "1-3"])
    assert xyz[:4] == [4, "1-3", [], 0] and len(xyz) == 18
    _, notes = read_script_args("Loopback", LOOPBACK.arg_specs(True), [1, 0.5, "Lazy", "None", "extra"])
    assert notes == ["Loopback takes 4 script_args; the other 1 were ignored"]


@pytest.mark.parametrize(
    ("script", "given", "field", "words"),
    [
        (PROMPT_MATRIX, ["yes"], "script_args.0", "true or false"),
        (PROMPT_MATRIX, [False, False, "both"], "script_args.2", "positive, negative"),
        (PROMPT_MATRIX, [False, False, "positive", "comma", 3.5], "script_args.4", "an integer"),
        (LOOPBACK, [33], "script_args.0", "between 1 and 32"),
        (LOOPBACK, [3, "half"], "script_args.1", "a number"),
        (XYZ_PLOT, [-1], "script_args.0", "not an index"),
        (XYZ_PLOT, ["Zoom"], "script_args.0", "'Zoom' is not one of"),
        (XYZ_PLOT, [1, "1", "Euler"], "script_args.2", "a list of strings"),
        (PROMPTS_FROM_FILE, [False, False, "start", 5], "script_args.3", "a string"),
    ],
)
def test_a_bad_argument_is_named(script: Any, given: list[Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _args(script, given, script is LOOPBACK)
    assert caught.value.field == field and words in caught.value.message
    assert caught.value.message.startswith(f"{field}: ")


def test_prompt_lines_are_read_as_a1111s_cmdargs() -> None:
    line = '--prompt a red "fox, running" --negative_prompt blurry --steps 12 --cfg_scale 6.5 --restore_faces true'
    assert parse_prompt_line(line) == {
        "prompt": "a red fox, running",
        "negative_prompt": "blurry",
        "steps": 12,
        "cfg_scale": 6.5,
        "restore_faces": True,
    }
    for bad, words in (
        ("--steps", "missing argument"),
        ("steps 3", 'must start with "--"'),
        ("--zoom 2", "unknown commandline option: --zoom"),
        ("--steps many", "not a valid value"),
        ('--prompt "open', "cannot split"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_prompt_line(bad)


def test_prompts_from_file_seeds_and_prompt_position() -> None:
    checkpoint = ModelRecord(
        name="alpha", kind=ModelKind.CHECKPOINT, arch="sd1", source="/x", sha256="ab" * 32, size=1
    )
    catalog = Catalog(checkpoints=(checkpoint,))
    text = "one\n  \n--prompt two --seed 5\n--sd_model alpha --sampler_name euler_a_x"
    with pytest.raises(ValidationError, match=r"script_args\.3: line 3: unknown sampler: euler_a_x"):
        plan_prompts_from_file(
            [True, False, "start", text], prompt="p", negative_prompt="", seed=10, batch_size=2, n_iter=1,
            catalog=catalog, rng=random.Random(1), max_jobs=10,
        )  # fmt: skip
    text = "one\n  \n--prompt two --seed 5\n--sd_model alpha --styles warm"
    variants = plan_prompts_from_file(
        [True, False, "end", text], prompt="p", negative_prompt="", seed=10, batch_size=2, n_iter=1,
        catalog=catalog, rng=random.Random(1), max_jobs=10,
    )  # fmt: skip
    assert [v.fields.get("prompt") for v in variants] == ["p one", "p two", None]
    assert [v.fields["seed"] for v in variants] == [10, 5, 14]  # iterated by batch size × count
    assert variants[2].settings == {"sd_model_checkpoint": "alpha"} and variants[2].fields["styles"] == [
        "warm"
    ]
    # "same seed": a -1 seed is drawn once for every line
    same = plan_prompts_from_file(
        [False, True, "start", "a\nb"], prompt="", negative_prompt="", seed=-1, batch_size=1, n_iter=1,
        catalog=EMPTY, rng=random.Random(3), max_jobs=10,
    )  # fmt: skip
    assert same[0].fields["seed"] == same[1].fields["seed"] != -1
    with pytest.raises(ValidationError, match="3 lines, the limit is 2"):
        plan_prompts_from_file(
            [False, False, "start", "a\nb\nc"], prompt="", negative_prompt="", seed=-1, batch_size=1,
            n_iter=1, catalog=EMPTY, rng=random.Random(3), max_jobs=2,
        )  # fmt: skip


def test_prompt_matrix_combinations_follow_a1111s_bits() -> None:
    plan = plan_prompt_matrix(
        [False, True, "positive", "comma", 0], prompt="base|a|b, |c", negative_prompt="", seed=3, subseed=9,
        max_jobs=100,
    )  # fmt: skip
    prompts = [v.fields["prompt"] for v in plan.variants]
    assert prompts[:5] == ["base", "base, a", "base, b", "base, a, b", "base, c"]
    assert len(prompts) == 8 and plan.rows == 2
    assert [v.fields["seed"] for v in plan.variants] == list(range(3, 11))
    start = plan_prompt_matrix(
        [True, False, "positive", "space", 0], prompt="base|a", negative_prompt="", seed=3, subseed=9,
        max_jobs=100,
    )  # fmt: skip
    assert [v.fields["prompt"] for v in start.variants] == ["base", "a base"]
    assert {v.fields["seed"] for v in start.variants} == {3}
    with pytest.raises(ValidationError, match="is 1024 images, the limit is 1000"):
        plan_prompt_matrix(
            [False, False, "positive", "comma", 0], prompt="x" + "|y" * 10, negative_prompt="", seed=1,
            subseed=1, max_jobs=1000,
        )  # fmt: skip


def _axis(label: str, is_img2img: bool = False) -> Any:
    return next(a for a in axes_for(is_img2img) if a.label == label)


@pytest.mark.parametrize(
    ("label", "text", "values"),
    [
        ("Seed", "1-5", [1, 2, 3, 4, 5]),
        ("Seed", "1-10 (+3)", [1, 4, 7, 10]),
        ("Steps", "10-20 [3]", [10, 15, 20]),
        ("Steps", "5, 8,  3", [5, 8, 3]),
        ("CFG Scale", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
        ("CFG Scale", "0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("CFG Scale", "7.5", [7.5]),
        ("Prompt S/R", 'cat, "a dog, sitting"', ["cat", "a dog, sitting"]),
        ("Size", "512x768", ["512x768"]),
    ],
)
def test_axis_values_use_a1111s_range_syntax(label: str, text: str, values: list[Any]) -> None:
    assert axis_values(_axis(label), text, [], False, EMPTY) == pytest.approx(values)


def test_axis_values_are_confirmed_and_bounded() -> None:
    assert axis_values(_axis("Sampler"), "", ["Euler a", "DPM++ 2M Karras"], False, EMPTY) == [
        "Euler a",
        "DPM++ 2M Karras",
    ]
    assert axis_values(_axis("Sampler"), "Euler", ["DDIM"], True, EMPTY) == ["Euler"]  # csv mode: the text
    with pytest.raises(ValueError, match="Unknown sampler: Zebra"):
        axis_values(_axis("Sampler"), "Zebra", [], True, EMPTY)
    with pytest.raises(ValueError, match="Unknown checkpoint: ghost"):
        axis_values(_axis("Checkpoint name"), "ghost", [], True, EMPTY)
    with pytest.raises(ValueError, match="limit"):
        axis_values(_axis("Seed"), "1-5000", [], False, EMPTY)
    with pytest.raises(ValueError, match="invalid literal"):
        axis_values(_axis("Steps"), "ten", [], False, EMPTY)
    assert [len(v) for v in axis_values(_axis("Prompt order"), "a, b, c", [], False, EMPTY)] == [3] * 6


def test_the_axis_lists_differ_per_tab_as_a1111s() -> None:
    txt2img = [a.label for a in axes_for(False)]
    img2img = [a.label for a in axes_for(True)]
    assert txt2img[:8] == [
        "Nothing",
        "Seed",
        "Var. seed",
        "Var. strength",
        "Steps",
        "Hires steps",
        "CFG Scale",
        "Prompt S/R",
    ]
    assert img2img[:8] == [
        "Nothing",
        "Seed",
        "Var. seed",
        "Var. strength",
        "Steps",
        "CFG Scale",
        "Image CFG Scale",
        "Prompt S/R",
    ]
    assert txt2img[-3:] == img2img[-3:] == ["Size", "Width", "Height"] and "Denoising" in txt2img
    assert len(txt2img) == 45 and len(img2img) == 44  # A1111 1.10's 43 and 42, then Width and Height


def test_plan_xyz_applies_x_then_y_then_z_and_varies_seeds() -> None:
    args = _args(
        XYZ_PLOT, ["Prompt S/R", "cat, dog, fox", [], "Size", "32x32, 64x48", [], "Seed", "1, 2", []]
    )
    args[13] = True  # vary seeds for X
    plan = plan_xyz(
        args, is_img2img=False, prompt="a cat", negative_prompt="no cat", steps=5, seed=100, catalog=EMPTY
    )
    assert plan.shape == (3, 2, 2) and len(plan.variants) == 12
    first, last = plan.variants[0].fields, plan.variants[-1].fields
    assert (first["prompt"], first["negative_prompt"], first["width"], first["seed"]) == (
        "a cat",
        "no cat",
        32,
        1,
    )
    assert (last["prompt"], last["negative_prompt"], last["height"], last["seed"]) == (
        "a fox",
        "no fox",
        48,
        4,
    )
    assert plan.x_labels == ["cat", "dog", "fox"] and plan.z_labels == ["Seed: 1", "Seed: 2"]
    assert plan.y_labels == ["Size: 32x32", "Size: 64x48"]
    assert plan.infotext["X Type"] == "Prompt S/R" and plan.infotext["Z Values"] == "1, 2"
    steps = plan_xyz(
        _args(XYZ_PLOT, ["UniPC Order", "2, 9"]), is_img2img=False, prompt="", negative_prompt="", steps=5,
        seed=1, catalog=EMPTY,
    )  # fmt: skip
    assert [v.settings["uni_pc_order"] for v in steps.variants] == [2, 4]
    with pytest.raises(ValidationError) as caught:
        plan_xyz(
            _args(XYZ_PLOT, ["Seed", "1", [], "Size", "big"]), is_img2img=False, prompt="", negative_prompt="",
            steps=5, seed=1, catalog=EMPTY,
        )  # fmt: skip
    assert caught.value.field == "script_args.4" and "Invalid size" in caught.value.message


def test_loopback_denoising_curves() -> None:
    linear = plan_loopback([5, 0.0, "Linear", "None"])
    assert [round(linear.strength(1.0, i), 4) for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    aggressive = plan_loopback([3, 0.0, "Aggressive", "None"])
    lazy = plan_loopback([3, 0.0, "Lazy", "None"])
    assert aggressive.strength(1.0, 1) < linear.strength(1.0, 2) < lazy.strength(1.0, 1)
    assert plan_loopback([1, 0.1, "Linear", "None"]).strength(0.6, 0) == 0.6
    assert "not supported" in plan_loopback([2, 0.5, "Linear", "CLIP"]).notes[0]


def test_grids_place_each_image_in_its_cell_and_labels_take_room_only_when_present() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (20, 10), c) for c in colours]
    grid = image_grid(images, rows=2)
    assert grid.size == (40, 20)
    assert grid.getpixel((5, 5)) == colours[0] and grid.getpixel((25, 5)) == colours[1]
    assert grid.getpixel((5, 15)) == colours[2] and grid.getpixel((25, 15)) == (255, 255, 255)
    dark = image_grid(images, rows=1, colours=GridColours(background="#101010"))
    assert dark.size == (60, 10)
    bare = draw_grid_annotations(
        image_grid(images[:2], rows=1), 20, 10, [[GridAnnotation()]] * 2, [[GridAnnotation()]]
    )
    assert bare.size == (40, 10)
    labelled = draw_grid_annotations(
        image_grid(images[:2], rows=1), 20, 10, [[GridAnnotation("a")], [GridAnnotation("b", False)]],
        [[GridAnnotation("row")]], margin=6,
    )  # fmt: skip
    assert labelled.width == 20 * 3 // 4 + 40 + 6 and labelled.height > 10
    pad_top = labelled.height - 10
    cell = labelled.crop((15 + 26, pad_top, 15 + 46, pad_top + 10))
    assert ImageChops.difference(cell, images[1]).getbbox() is None
    sizes = [i.size for i in images]
    assert grid_fits(sizes, 600) and not grid_fits(sizes, 599) and not grid_fits([], 600)


def test_split_and_combine_grid_give_back_the_image_and_blend_overlaps() -> None:
    image = Image.effect_mandelbrot((200, 120), (-2, -1, 1, 1), 50).convert("RGB")
    grid = split_grid(image, 64, 64, 16)
    assert [len(r.tiles) for r in grid.rows] == [4, 4, 4]  # ceil((200 - 16) / 48), ceil((120 - 16) / 48)
    assert grid.rows[-1].y == 120 - 64 and grid.rows[0].tiles[-1].x == 200 - 64
    assert ImageChops.difference(combine_grid(grid), image).getbbox() is None
    # a changed tile is blended linearly across the overlap into its left neighbour
    for row in grid.rows:
        for tile in row.tiles:
            tile.image = Image.new("RGB", (64, 64), (0, 0, 0) if tile.x == 0 else (255, 255, 255))
    combined = combine_grid(grid)
    second = grid.rows[0].tiles[1].x
    ramp = [combined.getpixel((second + i, 5))[0] for i in (0, 8, 15)]
    assert ramp == [int(i * 255 / 16) for i in (0, 8, 15)]


def test_poor_mans_outpainting_plans_the_border_tiles_with_a1111s_masks() -> None:
    init = Image.new("RGB", (64, 64), (10, 20, 30))
    plan = plan_poor_mans_outpainting(init, 64, 64, [32, 4, 2, ["left", "right", "up", "down"]], max_jobs=100)
    assert (plan.grid.image_w, plan.grid.image_h) == (128, 128)
    assert plan.work == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert (plan.mask_blur, plan.inpainting_fill) == (8, 2)
    corner, mask = plan.tile(0).image, plan.masks[0]
    assert corner.getpixel((0, 0)) == (0, 0, 0) and corner.getpixel((63, 63)) == (10, 20, 30)
    # white (repaint) outside the original, black over it less twice the blur
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((39, 39)) == 255 and mask.getpixel((41, 41)) == 0
    right_only = plan_poor_mans_outpainting(init, 64, 64, [32, 4, 0, ["right"]], max_jobs=100)
    assert (right_only.grid.image_w, right_only.grid.image_h) == (128, 64) and len(right_only.work) == 2
    with pytest.raises(ValidationError, match="must be less than"):
        plan_poor_mans_outpainting(init, 64, 64, [64, 4, 0, ["left"]], max_jobs=100)
    with pytest.raises(ValidationError, match="8 tiles, the limit is 4"):
        plan_poor_mans_outpainting(
            init, 64, 64, [32, 4, 0, list(("left", "right", "up", "down"))], max_jobs=4
        )
