"""The Training tab against a real ``sdfleet up`` whose workers train (the tiny SD 1.x checkpoint, CPU):
choose a few images and a caption file, name the LoRA, train it for a few steps while the page shows
the job's progress, then use the new LoRA in Generate — and bad input named at its field, not a
silent failure. Each the way a person would do it, in Chromium."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import LiveServer, engine_args, engine_name, expect, png_bytes, start_sdfleet

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(engine_name() == "fake", reason="the fake engine cannot train LoRAs"),
]

TRAINED = 180_000  # ms for a training job: the worker loads the base model first (slow on a busy CPU)
DONE = 120_000  # ms for a generation that fetches and loads the new LoRA
LORA = "browser-lora"
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}

# Records every text the jobs table shows (the page polls; a short run is easy to blink past).
RECORD_TABLE = """() => {
    window.trainTableSeen = [];
    const body = document.querySelector("#train-body");
    new MutationObserver(() => window.trainTableSeen.push(body.innerText)).observe(body, {
        childList: true, subtree: true, characterData: true,
    });
}"""


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[LiveServer]:
    """``sdfleet up`` with two local workers that take ``train_lora`` jobs (on by default; set here so a
    ``SDFLEET_WORKER_TRAIN=0`` in the environment cannot turn the test into a wait), training on one
    torch thread: the machine may be busy."""
    model = None
    if not os.environ.get("SDFLEET_TEST_BROWSER_MODEL"):
        model = str(request.getfixturevalue("tiny_models").sd1_file)
    live = start_sdfleet(
        tmp_path_factory.mktemp("sdfleet-train"),
        ["up", "--workers", "2", *engine_args(model)],
        env={"SDFLEET_WORKER_TRAIN": "true", "SDFLEET_WORKER_TRAIN_THREADS": "1"},
    )
    yield live
    live.stop()


def training_images(folder: Path) -> list[Path]:
    """Four coloured squares and a caption file for one of them (``red.txt`` next to ``red.png``)."""
    paths = []
    for name, colour in COLOURS.items():
        path = folder / f"{name}.png"
        path.write_bytes(png_bytes(colour))
        paths.append(path)
    caption = folder / "red.txt"
    caption.write_text("a photo of zqx, bright red\n")
    return [*paths, caption]


def choose_files(page: Any, paths: list[Path]) -> None:
    """Click the drop zone and pick files in the file chooser that opens."""
    with page.expect_file_chooser() as chooser:
        page.click("#train-drop")
    assert chooser.value.is_multiple()
    chooser.value.set_files([str(p) for p in paths])


def training_jobs(server: LiveServer) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = server.client.get("/v1/jobs", params={"kind": "train_lora"}).json()["jobs"]
    return jobs


def checkpoint_name(server: LiveServer) -> str:
    [model] = server.client.get("/v1/models", params={"kind": "checkpoint"}).json()["models"]
    return str(model["name"])


def test_train_a_lora_from_the_page_then_generate_with_it(
    page: Any, server: LiveServer, tmp_path: Path
) -> None:
    workers = server.client.get("/v1/admin/workers").json()["workers"]
    assert all("train_lora" in w["capabilities"]["kinds"] for w in workers), workers
    checkpoint = checkpoint_name(server)

    page.click("#tabbtn-train")
    form = page.locator("#train-form")
    expect(form.locator("select[name=base_model]")).to_have_value(checkpoint)
    # The tiny checkpoint was made for 64 px: the form proposes that, not 512.
    expect(form.locator("input[name=resolution]")).to_have_value("64")

    choose_files(page, training_images(tmp_path))
    expect(page.locator("#train-count")).to_have_text("· 4 images, 1 with a caption")
    files = page.locator("#train-files li")
    expect(files).to_have_count(4)
    expect(files.filter(has_text="red.png")).to_contain_text("a photo of zqx, bright red")

    form.get_by_label("LoRA name").fill(LORA)
    form.get_by_label("Trigger word").fill("zqx")
    expect(form.get_by_label("Instance prompt")).to_have_attribute("placeholder", "a photo of zqx")
    form.get_by_label("Training steps").fill("40")
    form.get_by_label("Resolution (px)").fill("64")
    form.get_by_label("Checkpoint every (steps, 0: none)").fill("10")
    page.evaluate(RECORD_TABLE)
    form.get_by_role("button", name="Train", exact=True).click()

    expect(page.locator(".toast.ok", has_text=f"Training {LORA}")).to_be_visible()
    expect(files).to_have_count(0)  # handed over: the next run starts from a clean slate
    row = page.locator("#train-body tr", has_text=LORA)
    expect(row.locator(".state-badge")).to_have_text("succeeded", timeout=TRAINED)
    expect(row.locator(".col-progress")).to_contain_text(re.compile(r"step 40/40 · loss \d+\.\d{4}"))
    expect(row.locator(".progress-fill")).to_have_attribute("style", re.compile(r"width: 100%"))
    expect(row).to_contain_text("steps 30, 40")  # checkpoints every 10 steps, the newest two kept
    expect(row.locator(".train-result code")).to_have_text(f"<lora:{LORA}:1>")
    expect(page.locator(".toast.ok", has_text=f"LoRA {LORA} is ready")).to_be_visible()
    seen: list[str] = page.evaluate("window.trainTableSeen")
    # it showed the run, not just its end (40 steps: several of the page's 1 s refreshes)
    assert any("running" in text.lower() for text in seen), seen

    # What was asked for is what the job got.
    [job] = [j for j in training_jobs(server) if j["params"]["name"] == LORA]
    params = job["params"]
    assert (params["steps"], params["resolution"], params["checkpoint_every"]) == (40, 64, 10)
    assert (params["trigger_word"], params["instance_prompt"]) == ("zqx", "a photo of zqx")
    assert params["base_model"] == checkpoint
    captions = [image.get("caption") for image in params["images"]]
    assert [c for c in captions if c] == ["a photo of zqx, bright red"]
    assert captions.count(None) == 3
    assert all(image["ref"].startswith("blob:inputs/") for image in params["images"])
    assert job["progress"]["loss"] is not None

    # The LoRA is in the registry, with its trigger word.
    loras = server.client.get("/v1/models", params={"kind": "lora"}).json()["models"]
    [lora] = [m for m in loras if m["name"] == LORA]
    assert lora["trigger_words"] == ["zqx"]
    assert lora["sha256"] == job["result"]["lora"]["sha256"]

    # …and usable: Generate offers it, and a generation with it succeeds.
    row.get_by_role("button", name="Use in Generate").click()
    expect(page.locator("#tab-generate")).to_be_visible()
    gen = page.locator("#gen-form")
    expect(gen.locator("textarea[name=prompt]")).to_have_value(f"<lora:{LORA}:1> a photo of zqx")
    expect(gen.locator("select[name=model]")).to_have_value(checkpoint)
    expect(page.locator("#lora-select option", has_text=LORA)).to_have_count(1)
    gen.locator("input[name=steps]").fill("4")
    gen.locator("[name=width]").fill("64")
    gen.locator("[name=height]").fill("64")
    page.click("#gen-submit")

    card = page.locator(".run-card", has=page.locator(".run-prompt", has_text=f"<lora:{LORA}:1>")).first
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    expect(card.locator(".tile img")).to_have_js_property("naturalWidth", 64)
    generated = server.client.get("/v1/jobs", params={"kind": "txt2img", "limit": 1}).json()["jobs"][0]
    assert generated["state"] == "succeeded"
    assert re.search(f'Lora hashes: "{LORA}: [0-9a-f]{{12}}"', generated["outputs"][0]["infotext"])


def test_bad_training_input_is_named_at_its_field(page: Any, server: LiveServer, tmp_path: Path) -> None:
    before = len(training_jobs(server))
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.url.endswith("/v1/inputs") else None)
    page.click("#tabbtn-train")
    form = page.locator("#train-form")
    train = form.get_by_role("button", name="Train", exact=True)
    form.get_by_label("LoRA name").fill("never-trained")

    # No images: the drop zone says so (nothing is sent).
    train.click()
    images = form.locator("[data-field=images]")
    expect(images).to_have_class(re.compile("invalid"))
    expect(images.locator(".field-error")).to_have_text(
        "Add a few training images first (PNG, JPEG or WebP)."
    )
    expect(page.locator("#train-drop")).to_be_focused()

    # Choosing images clears the mark. Zero steps is caught at the field before anything is uploaded.
    choose_files(page, training_images(tmp_path)[:2])
    expect(images).not_to_have_class(re.compile("invalid"))
    expect(images.locator(".field-error")).to_have_count(0)
    form.get_by_label("Training steps").fill("0")
    train.click()
    steps = form.locator("[data-field=steps]")
    expect(steps).to_have_class(re.compile("invalid"))
    expect(steps.locator(".field-error")).to_contain_text("Training steps:")
    expect(steps.locator(".field-error")).to_contain_text("1")
    expect(form.get_by_label("Training steps")).to_be_focused()
    expect(form.locator(".field-error")).to_have_count(1)
    assert uploads == []

    # Typing in the field clears its mark; what only the server knows comes back named too.
    form.get_by_label("Training steps").fill("4")
    expect(steps).not_to_have_class(re.compile("invalid"))
    form.get_by_label("Trigger word").fill("zqx")
    form.get_by_label("Instance prompt").fill("a photo of a cat")
    train.click()
    trigger = form.locator("[data-field=trigger_word]")
    expect(trigger.locator(".field-error")).to_have_text(
        "params.trigger_word: 'zqx' does not appear in instance_prompt"
    )
    expect(trigger).to_have_class(re.compile("invalid"))
    assert len(uploads) == 2  # this time the images went up; the job was refused

    form.get_by_label("Instance prompt").fill("a photo of zqx")
    form.get_by_label("LoRA name").fill(checkpoint_name(server))
    train.click()
    name = form.locator("[data-field=name]")
    expect(name.locator(".field-error")).to_contain_text("is already a checkpoint in the registry")
    expect(trigger.locator(".field-error")).to_have_count(0)

    # The images stay chosen for the next try, the button is back, and no job was made.
    expect(page.locator("#train-files li")).to_have_count(2)
    expect(train).to_be_enabled()
    expect(train).to_have_text("Train")
    assert len(training_jobs(server)) == before
