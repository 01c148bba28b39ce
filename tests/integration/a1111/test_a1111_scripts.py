"""A1111's selectable scripts on the queue: ``script_name`` + ``script_args`` run as batches of ordinary jobs on
FakeEngine workers (Prompt matrix, Prompts from file or textbox, X/Y/Z plot, Loopback), the call answers with
A1111's grid first, ``/scripts`` and ``/script-info`` list them, and bad ``script_args`` are a 422 naming the
argument before anything runs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops

from sdfleet.engine.fake import FakeEngine, render
from tests.integration.a1111.conftest import checkpoint_body, decode_png, png_b64
from tests.support.live import WorkerPool, wait_until

BASE: dict[str, Any] = {"steps": 2, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler"}


async def _call(api: httpx.AsyncClient, path: str, **body: Any) -> tuple[list[Image.Image], dict[str, Any]]:
    response = await api.post(f"/sdapi/v1/{path}", json={**BASE, **body})
    assert response.status_code == 200, response.text
    answer = response.json()
    return [decode_png(i) for i in answer["images"]], json.loads(answer["info"])


def _params(infotext: str) -> str:
    return infotext.splitlines()[-1]


async def test_scripts_and_script_info_list_the_selectable_scripts(api: httpx.AsyncClient) -> None:
    scripts = (await api.get("/sdapi/v1/scripts")).json()
    assert scripts["txt2img"][:3] == ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
    assert "loopback" in scripts["img2img"] and "loopback" not in scripts["txt2img"]
    assert "poor man's outpainting" in scripts["img2img"] and "sd upscale" in scripts["img2img"]
    assert "outpainting mk2" in scripts["img2img"] and "outpainting mk2" not in scripts["txt2img"]
    assert "sd upscale" not in scripts["txt2img"]
    info = (await api.get("/sdapi/v1/script-info")).json()
    by_name = {(s["name"], s["is_img2img"]): s for s in info}
    xyz = by_name[("x/y/z plot", False)]
    assert xyz["is_alwayson"] is False and len(xyz["args"]) == 18
    assert xyz["args"][0]["label"] == "X type" and xyz["args"][0]["value"] == "Seed"
    assert "Hires steps" in xyz["args"][0]["choices"]
    assert "Hires steps" not in by_name[("x/y/z plot", True)]["args"][0]["choices"]
    loopback = by_name[("loopback", True)]["args"]
    assert [a["label"] for a in loopback][:2] == ["Loops", "Final denoising strength"]
    assert loopback[0] == {
        "label": "Loops",
        "value": 4,
        "minimum": 1,
        "maximum": 32,
        "step": 1,
        "choices": None,
    }
    matrix = by_name[("prompt matrix", False)]["args"]
    assert matrix[2]["choices"] == ["positive", "negative"]


async def test_prompt_matrix_runs_each_combination_with_the_grid_first(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    images, info = await _call(
        api, "txt2img", prompt="a cat|red|hat", script_name="Prompt Matrix", script_args=[]
    )
    assert len(images) == 5 and info["index_of_first_image"] == 1
    prompts = [t.splitlines()[0] for t in info["infotexts"][1:]]
    assert prompts == ["a cat", "a cat, red", "a cat, hat", "a cat, red, hat"]
    assert info["all_prompts"] == prompts and info["all_seeds"] == [7, 7, 7, 7]
    grid = images[0]
    # 2 × 2 cells of 64 px, a label column (3/4 of a cell) on the left and a label row on top
    assert grid.width == 64 * 2 + 48 and grid.height > 64 * 2
    # the cells are the images themselves, in order
    pad_top = grid.height - 128
    for index, image in enumerate(images[1:]):
        x, y = 48 + (index % 2) * 64, pad_top + (index // 2) * 64
        cell = grid.crop((x, y, x + 64, y + 64))
        assert ImageChops.difference(cell, image.convert("RGB")).getbbox() is None
    assert grid.info["parameters"] == info["infotexts"][0]
    assert info["sdfleet"]["script"] == "Prompt Matrix" and len(info["sdfleet"]["job_ids"]) == 4

    # variable parts first, a seed per picture, space-joined, on the negative prompt, on img2img
    images, info = await _call(
        api,
        "img2img",
        init_images=[png_b64()],
        prompt="keep",
        negative_prompt="blurry|dark",
        script_name="prompt matrix",
        script_args=[True, True, "negative", "space", 4],
    )
    assert len(images) == 3
    assert info["all_negative_prompts"] == ["blurry", "dark blurry"]
    assert info["all_prompts"] == ["keep", "keep"] and info["all_seeds"] == [7, 8]
    assert images[0].width == 64 * 2 + 4  # one row: no row labels, a 4 px margin between the columns


async def test_grid_settings_of_the_tenant_take_effect(api: httpx.AsyncClient, workers: WorkerPool) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    options = {"grid_background_color": "#ff0000", "grid_text_active_color": "#0000ff"}
    assert (await api.post("/sdapi/v1/options", json=options)).status_code == 200
    images, _ = await _call(api, "txt2img", prompt="a|b", script_name="prompt matrix")
    assert images[0].convert("RGB").getpixel((1, 1)) == (255, 0, 0)  # the label row's background
    grid = images[0].convert("RGB")
    label_row = [grid.getpixel((x, y)) for x in range(grid.width) for y in range(grid.height - 64)]
    assert any(b > r and b > g for r, g, b in label_row)  # the active label's text is blue
    # a grid over img_max_size_mp megapixels is not drawn (2 × 64² = 8192 px > 0.005 MP)
    assert (await api.post("/sdapi/v1/options", json={"img_max_size_mp": 0.005})).status_code == 200
    images, info = await _call(api, "txt2img", prompt="a|b", script_name="prompt matrix")
    assert len(images) == 2 and info["index_of_first_image"] == 0
    # Loopback's grid follows return_grid
    assert (await api.post("/sdapi/v1/options", json={"return_grid": False})).status_code == 200
    images, _ = await _call(
        api, "img2img", init_images=[png_b64()], script_name="loopback", script_args=[2, 0.5]
    )
    assert len(images) == 2


async def test_prompts_from_file_runs_one_job_per_line_with_its_options(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    lines = 'a dog\n\n--prompt "a bird on a wire" --steps 3 --seed 42\n--negative_prompt blurry --width 32 --height 48'
    images, info = await _call(
        api,
        "txt2img",
        prompt="photo",
        seed=100,
        script_name="prompts from file or textbox",
        script_args=[True, False, "start", lines],
    )
    assert [i.size for i in images] == [(64, 64), (64, 64), (32, 48)]
    texts = info["infotexts"]
    assert info["index_of_first_image"] == 0 and len(texts) == 3
    assert texts[0].splitlines()[0] == "a dog photo" and "Seed: 100," in _params(texts[0])
    assert texts[1].splitlines()[0] == "a bird on a wire photo" and "Steps: 3," in _params(texts[1])
    assert "Seed: 42," in _params(texts[1])
    assert texts[2].splitlines()[0] == "photo" and "Negative prompt: blurry" in texts[2]
    assert "Seed: 102," in _params(texts[2])  # iterated: 100, (line 2 set its own), 102

    # "end" and no seed option: each line draws its own seed
    images, info = await _call(
        api,
        "txt2img",
        prompt="photo",
        seed=-1,
        script_name="Prompts from file or textbox",
        script_args=[False, False, "end", "one\ntwo"],
    )
    assert [t.splitlines()[0] for t in info["infotexts"]] == ["photo one", "photo two"]
    assert len(set(info["all_seeds"])) == 2
    # the request's own settings: per call, or kept for the tenant when restore-afterwards is off
    images, info = await _call(
        api,
        "txt2img",
        script_name="prompts from file or textbox",
        script_args=[False, False, "start", "one"],
        override_settings={"CLIP_stop_at_last_layers": 2},
        override_settings_restore_afterwards=False,
    )
    assert "Clip skip: 2" in info["infotexts"][0]
    assert (await api.get("/sdapi/v1/options")).json()["CLIP_stop_at_last_layers"] == 2


async def test_xyz_plot_runs_a_job_per_cell_with_the_labelled_grid_first(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool, tmp_path: Path
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    # X: Seed 1,2 — Y: Steps 2-3 — Z: nothing; the sub images too
    args = [1, "1, 2", [], 4, "2-3", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    images, info = await _call(api, "txt2img", script_name="X/Y/Z Plot", script_args=args)
    assert len(images) == 5 and info["index_of_first_image"] == 1
    cells = [_params(t) for t in info["infotexts"][1:]]
    assert ["Seed: 1," in cells[0], "Seed: 2," in cells[1], "Seed: 1," in cells[2]] == [True] * 3
    assert [
        "Steps: 2," in cells[0],
        "Steps: 2," in cells[1],
        "Steps: 3," in cells[2],
        "Steps: 3," in cells[3],
    ] == [True] * 4
    grid = images[0]
    assert grid.width == 48 + 128 and grid.height > 128  # labels: "Seed: 1" on top, "Steps: 2" left
    assert "Script: X/Y/Z plot" in info["infotexts"][0] and "X Type: Seed" in info["infotexts"][0]
    pad_top = grid.height - 128
    last = grid.crop((48 + 64, pad_top + 64, 48 + 128, pad_top + 128))
    assert ImageChops.difference(last, images[4].convert("RGB")).getbbox() is None

    # without sub images: only the grid; no legend: exactly the cells side by side
    args = [1, "5,6,7", [], 0, "", [], 0, "", [], False, False, False, False, False, False, False, 0, False]
    images, info = await _call(api, "txt2img", script_name="x/y/z plot", script_args=args)
    assert len(images) == 1 and images[0].size == (192, 64)
    assert info["all_seeds"] == [5, 6, 7]

    # Prompt S/R on X, checkpoints on Y from the dropdown (one job each, on its checkpoint)
    for name in ("xyz-alpha", "xyz-beta"):
        assert (await admin.post("/v1/models", json=checkpoint_body(tmp_path, name))).status_code == 201
    args = [
        "Prompt S/R",
        "cat, dog",
        [],
        "Checkpoint name",
        "",
        ["xyz-alpha", "xyz-beta"],
        0,
        "",
        [],
        False,
        True,
    ]
    images, info = await _call(api, "txt2img", prompt="a cat", script_name="x/y/z plot", script_args=args)
    assert [t.splitlines()[0] for t in info["infotexts"][1:]] == ["a cat", "a dog", "a cat", "a dog"]
    models = [_params(t).split("Model: ")[1].split(",")[0] for t in info["infotexts"][1:]]
    assert models == ["xyz-alpha", "xyz-alpha", "xyz-beta", "xyz-beta"]
    # Size on X (by index), CFG Scale by a range with a step on Y
    size_axis = [len(_axis_labels(False)) - 3, "32x48, 64x32", [], 6, "3-5 (+2)", []]
    images, info = await _call(
        api, "txt2img", script_name="x/y/z plot", script_args=[*size_axis, 0, "", [], False, True]
    )
    assert [i.size for i in images[1:]] == [(32, 48), (64, 32), (32, 48), (64, 32)]
    cfg = [_params(t).split("CFG scale: ")[1].split(",")[0] for t in info["infotexts"][1:]]
    assert cfg == ["3", "3", "5", "5"]
    # Width and Height (after A1111's axes)
    args = ["Width", "32, 48", [], "Height", "40", []]
    images, info = await _call(
        api, "txt2img", script_name="x/y/z plot", script_args=[*args, 0, "", [], False, True]
    )
    assert [i.size for i in images[1:]] == [(32, 40), (48, 40)]


def _axis_labels(is_img2img: bool) -> list[str]:
    from sdfleet.a1111.xyz import axes_for

    return [axis.label for axis in axes_for(is_img2img)]


async def test_loopback_feeds_each_output_to_the_next_pass(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0))
    init = png_b64((20, 200, 40))
    images, info = await _call(
        api,
        "img2img",
        init_images=[init],
        prompt="loop",
        denoising_strength=0.8,
        script_name="Loopback",
        script_args=[3, 0.2, "Linear", "None"],
    )
    assert len(images) == 4 and info["index_of_first_image"] == 1
    jobs = [(await admin.get(f"/v1/jobs/{j}")).json() for j in info["sdfleet"]["job_ids"]]
    strengths = [j["params"]["denoising_strength"] for j in jobs]
    assert strengths == pytest.approx([0.8, 0.5, 0.2])
    assert info["all_seeds"] == [7, 8, 9]
    # pass k = blend(pass k-1's image, the fake engine's picture of seed 7 + k, strength k)
    previous = decode_png(init).convert("RGB")
    for k, image in enumerate(images[1:]):
        expected = Image.blend(previous, render(7 + k, "loop", 64, 64), strengths[k])
        assert ImageChops.difference(expected, image.convert("RGB")).getbbox() is None, k
        previous = image.convert("RGB")
    assert images[0].size == (192, 64)  # the passes in one row

    # two batches: two chains side by side, only their last images (and their grid)
    images, info = await _call(
        api,
        "img2img",
        init_images=[init],
        n_iter=2,
        script_name="loopback",
        script_args=[2],
    )
    assert len(images) == 3 and info["all_seeds"] == [8, 10]


async def test_poor_mans_outpainting_inpaints_the_border_tiles_and_blends_them_back(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    colour = (20, 200, 40)
    images, info = await _call(
        api,
        "img2img",
        init_images=[png_b64(colour)],
        prompt="grass",
        script_name="poor man's outpainting",
        script_args=[32, 4, 1, ["left", "right", "up", "down"]],
    )
    # 64 px + 32 on each side → a 128 px canvas, 3 × 3 tiles of 64 overlapping by 32; the middle one is
    # the original image, untouched: 8 jobs, one combined image
    assert len(images) == 1 and images[0].size == (128, 128)
    assert len(info["sdfleet"]["job_ids"]) == 8 and info["all_seeds"] == [7]
    out = images[0].convert("RGB")
    assert out.getpixel((64, 64)) == colour  # the original, kept by the mask
    for corner in ((2, 2), (125, 2), (2, 125), (125, 125)):
        assert out.getpixel(corner) not in ((0, 0, 0), colour), corner  # drawn, not the empty canvas
    # one side only: the canvas grows to the right (64 + 32 → 128: 64 new pixels), tiles at x 0, 32 and 64,
    # of which the last two reach into the new part
    images, info = await _call(
        api,
        "img2img",
        init_images=[png_b64(colour)],
        script_name="Poor man's outpainting",
        script_args=[32, 4, 0, ["right"]],
    )
    assert images[0].size == (128, 64) and len(info["sdfleet"]["job_ids"]) == 2
    assert images[0].convert("RGB").getpixel((10, 32)) == colour


async def test_outpainting_mk2_grows_one_side_per_round_from_the_last_picture(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.0), count=2)
    colour = (20, 200, 40)
    images, info = await _call(
        api,
        "img2img",
        init_images=[png_b64(colour)],
        prompt="grass",
        script_name="Outpainting mk2",
        script_args=["", 32, 0, ["left", "right", "up", "down"], 1.0, 0.05],
    )
    # 64 px + 32 on each side → 128 × 128, grown one side per job, each job from the last one's picture
    assert len(images) == 1 and images[0].size == (128, 128)
    ids = info["sdfleet"]["job_ids"]
    assert len(ids) == 4 and info["all_seeds"] == [7]
    jobs = [(await admin.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
    sizes = [(j["params"]["width"], j["params"]["height"]) for j in jobs]
    assert sizes == [(64, 64), (64, 64), (128, 64), (128, 64)]  # the request's size across the grown axis
    assert all(j["params"]["inpainting_fill"] == 1 and j["params"]["seed"] == 7 for j in jobs)
    out = images[0].convert("RGB")
    assert out.getpixel((64, 64)) == colour  # the original, kept by the mask
    for corner in ((2, 2), (125, 2), (2, 125), (125, 125)):
        assert out.getpixel(corner) not in ((0, 0, 0), colour), corner  # drawn, not the empty canvas

    # two pictures (n_iter 2): two chains at seeds 7 and 8, one side each → the grid first, then both
    images, info = await _call(
        api,
        "img2img",
        init_images=[png_b64(colour)],
        n_iter=2,
        script_name="outpainting mk2",
        script_args=["", 64, 8, ["right"]],
    )
    assert [i.size for i in images] == [(256, 64), (128, 64), (128, 64)]
    assert info["all_seeds"] == [7, 8] and len(info["sdfleet"]["job_ids"]) == 2
    assert images[1].tobytes() != images[2].tobytes()


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("txt2img", {"script_name": "nope"}, "script_name", "Script 'nope' not found"),
        ("txt2img", {"script_name": "loopback"}, "script_name", "Script 'loopback' not found"),
        (
            "txt2img",
            {"script_name": "prompt matrix", "script_args": [False, False, "sideways"]},
            "script_args.2",
            "Select prompt",
        ),
        (
            "txt2img",
            {"script_name": "prompt matrix", "script_args": [False, False, "positive", "comma", 9999]},
            "script_args.4",
            "between 0 and 500",
        ),
        ("txt2img", {"script_name": "x/y/z plot", "script_args": [999]}, "script_args.0", "not an index"),
        (
            "img2img",
            {"script_name": "outpainting mk2", "script_args": ["", 32, 4, []], "init_images": [png_b64()]},
            "script_args.3",
            "at least one outpainting direction",
        ),
        (
            "img2img",
            {"script_name": "outpainting mk2", "script_args": ["", 32, 4, ["left"], 9.0]},
            "script_args.4",
            "between 0",
        ),
        (
            "txt2img",
            {"script_name": "x/y/z plot", "script_args": ["Prompt S/R", "zebra,cat"]},
            "script_args.1",
            "did not find zebra",
        ),
        (
            "txt2img",
            {"script_name": "x/y/z plot", "script_args": ["Sampler", "Euler,Nonesuch"]},
            "script_args.1",
            "Unknown sampler: Nonesuch",
        ),
        (
            "txt2img",
            {
                "script_name": "x/y/z plot",
                "script_args": [
                    "Checkpoint name",
                    "ghost",
                    [],
                    0,
                    "",
                    [],
                    0,
                    "",
                    [],
                    True,
                    False,
                    False,
                    False,
                    False,
                    False,
                    False,
                    0,
                    True,
                ],
            },
            "script_args.1",
            "Unknown checkpoint: ghost",
        ),
        (
            "txt2img",
            {"script_name": "x/y/z plot", "script_args": ["Steps", "1-100000"]},
            "script_args.1",
            "limit",
        ),
        (
            "txt2img",
            {
                "script_name": "prompts from file or textbox",
                "script_args": [False, False, "start", "ok\n--bogus 1"],
            },
            "script_args.3",
            "line 2: unknown commandline option: --bogus",
        ),
        (
            "txt2img",
            {
                "script_name": "prompts from file or textbox",
                "script_args": [False, False, "start", "--steps"],
            },
            "script_args.3",
            "missing argument",
        ),
        (
            "txt2img",
            {"script_name": "prompts from file or textbox", "script_args": [False, 3]},
            "script_args.1",
            "true or false",
        ),
        (
            "img2img",
            {"script_name": "loopback", "script_args": [0], "init_images": [png_b64()]},
            "script_args.0",
            "between 1 and 32",
        ),
        (
            "img2img",
            {"script_name": "poor man's outpainting", "script_args": [64], "init_images": [png_b64()]},
            "script_args.0",
            "must be less than the width and height",
        ),
        (
            "img2img",
            {
                "script_name": "poor man's outpainting",
                "script_args": [8, 4, 0, ["left", "sideways"]],
                "init_images": [png_b64()],
            },
            "script_args.3",
            "takes only left, right, up, down",
        ),
    ],
)
async def test_bad_script_args_are_a_422_naming_the_argument(
    api: httpx.AsyncClient, path: str, body: dict[str, Any], field: str, words: str
) -> None:
    response = await api.post(f"/sdapi/v1/{path}", json={**BASE, "prompt": "a cat", **body})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert words in detail and (field in detail or field == "script_name")
    # nothing was submitted: the tenant has no request in flight
    progress = (await api.get("/sdapi/v1/progress")).json()
    assert progress["current_task"] is None


async def test_interrupt_stops_every_job_of_a_script_and_answers_what_was_drawn(
    api: httpx.AsyncClient, workers: WorkerPool
) -> None:
    await workers.start(FakeEngine(step_seconds=0.05))
    # 6 cells of 20 steps (a second each) on one worker
    args = [1, "1-6", [], 0, "", [], 0, "", [], True, True]
    body = {**BASE, "steps": 20, "prompt": "x", "script_name": "x/y/z plot", "script_args": args}
    started = time.monotonic()
    call = asyncio.create_task(api.post("/sdapi/v1/txt2img", json=body))

    async def running() -> bool:
        return (await api.get("/sdapi/v1/progress")).json()["progress"] > 0.01

    await wait_until(running, what="the first cell running")
    assert (await api.get("/sdapi/v1/progress")).json()["current_task"].startswith("task(")
    assert (await api.post("/sdapi/v1/interrupt")).json() == {}
    response = await call
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["sdfleet"]["interrupted"] is True and len(info["sdfleet"]["job_ids"]) == 6
    assert len(info["all_seeds"]) <= 2  # the queued cells never ran
    assert time.monotonic() - started < 4
    assert (await api.get("/sdapi/v1/progress")).json()["current_task"] is None
