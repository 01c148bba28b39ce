"""The LoRA trainer on the tiny models: exact resume, checkpoints and keep-N, spec validation, SDXL,
the exported kohya file in the engine, interruption."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from sdfleet.domain import JobKind
from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.errors import Interrupted, ValidationError
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.testing.tiny_models import TinyModels
from sdfleet.training.data import SampleOrder, TrainingImage, images_from_spec
from sdfleet.training.state import CheckpointRetention, TrainState, read_state_info
from sdfleet.training.trainer import LoraTrainer, TrainResult
from tests.engine.conftest import spec as gen_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[TrainingImage]:
    """Three small pictures of a coloured disc (not square: the loader crops), one with a caption."""
    folder = tmp_path_factory.mktemp("pictures")
    out = []
    for index, colour in enumerate([(220, 30, 30), (30, 30, 220), (30, 180, 30)]):
        image = Image.new("RGB", (48, 40), (235, 235, 235))
        ImageDraw.Draw(image).ellipse((6 + 3 * index, 5, 38, 35), fill=colour)
        path = folder / f"disc-{index}.png"
        image.save(path)
        out.append(TrainingImage(path, "a zqx disc, bright" if index == 0 else None))
    return out


def make_spec(pictures: list[TrainingImage], **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "zqx-disc",
        "base_model": "tiny-sd1",
        "images": [{"ref": p.path.name, "caption": p.caption} for p in pictures],
        "instance_prompt": "a zqx disc",
        "trigger_word": "zqx",
        "resolution": 32,
        "steps": 9,
        "rank": 4,
        "learning_rate": 1e-2,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "seed": 7,
    }
    values.update(overrides)
    return values


@dataclass
class Calls:
    progress: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, Path, bool, int]] = field(default_factory=list)
    """(step, path, file existed during the call, step read from the file)."""
    validations: list[tuple[int, list[Image.Image]]] = field(default_factory=list)
    remote: dict[str, bytes] = field(default_factory=dict)

    def on_progress(self, step: int, total: int, loss: float, it_per_s: float, eta: float) -> None:
        self.progress.append((step, total, loss, it_per_s, eta))

    def on_validation(self, step: int, images: list[Image.Image]) -> None:
        self.validations.append((step, images))


def lora_files(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "checkpoints").glob("*.safetensors"))


# --------------------------------------------------------------------------------------------- SD 1.x run


@dataclass
class Trained:
    result: TrainResult
    calls: Calls
    work: Path
    trainer: LoraTrainer


@pytest.fixture(scope="module")
def trained(
    tiny: TinyModels, pictures: list[TrainingImage], tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    """9 steps on the tiny SD 1.x file: checkpoints every 2 (keep 2, uploaded to a fake remote store that
    prunes through CheckpointRetention), validation every 4, text encoder trained."""
    work = tmp_path_factory.mktemp("train-sd1")
    calls = Calls()
    retention: CheckpointRetention[str] = CheckpointRetention(2)

    def on_checkpoint(step: int, path: Path) -> None:
        existed = path.is_file()
        calls.checkpoints.append((step, path, existed, int(read_state_info(path)["step"])))
        key = f"checkpoints/job-1/{path.name}"
        calls.remote[key] = path.read_bytes()
        for old in retention.add(step, key):
            del calls.remote[old]

    spec = make_spec(
        pictures,
        train_text_encoder=True,
        validation_prompts=["a zqx disc", "a disc"],
        validation_every=4,
        validation_steps=3,
    )
    trainer = LoraTrainer(spec, tiny.sd1_file, pictures, work, device="cpu")
    result = trainer.run(
        on_progress=calls.on_progress, on_checkpoint=on_checkpoint, on_validation=calls.on_validation
    )
    return Trained(result, calls, work, trainer)


def test_progress_is_reported_every_step(trained: Trained) -> None:
    steps = [p[0] for p in trained.calls.progress]
    assert steps == list(range(1, 10))
    assert all(
        total == 9 and np.isfinite(loss) and speed > 0 for _, total, loss, speed, _ in trained.calls.progress
    )
    assert trained.calls.progress[-1][4] == 0.0  # ETA at the last step
    assert trained.result.steps == 9 and trained.result.resumed_from is None


def test_checkpoints_every_n_steps_and_only_the_newest_are_kept(trained: Trained) -> None:
    calls = trained.calls
    assert [(s, existed, read) for s, _, existed, read in calls.checkpoints] == [
        (s, True, s) for s in (2, 4, 6, 8)
    ]
    # locally the trainer pruned to keep_checkpoints; remotely the callback did, through CheckpointRetention
    assert lora_files(trained.work) == ["step-00000006.safetensors", "step-00000008.safetensors"]
    assert sorted(calls.remote) == [
        "checkpoints/job-1/step-00000006.safetensors",
        "checkpoints/job-1/step-00000008.safetensors",
    ]
    assert [p.name for p in trained.result.checkpoints] == lora_files(trained.work)
    state = TrainState.load(trained.work / "checkpoints" / "step-00000008.safetensors")
    assert state.step == 8 and state.total_steps == 9 and state.samples_seen == 8
    assert state.optimizer["state"] and state.lr_scheduler["last_epoch"] == 8
    assert any(k.startswith("text_encoder.") for k in state.lora)
    assert state.rng.generator.dtype == torch.uint8


def test_validation_images_every_k_steps_and_at_the_end(trained: Trained) -> None:
    got = [(step, len(images), images[0].size) for step, images in trained.calls.validations]
    assert got == [(4, 2, (32, 32)), (8, 2, (32, 32)), (9, 2, (32, 32))]
    first, last = trained.calls.validations[0][1][0], trained.calls.validations[-1][1][0]
    assert not np.array_equal(np.asarray(first), np.asarray(last))  # the weights moved in between


def test_export_is_a_kohya_lora_with_training_metadata(trained: Trained) -> None:
    path = trained.result.lora_path
    assert path.name == "zqx-disc.safetensors"
    header = read_header(path)
    keys = set(header.shapes)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    down = header.shapes[
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"
    ]
    assert down[0] == 4
    meta = header.metadata
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4"
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_steps"] == "9" and meta["ss_learning_rate"] == "0.01"
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["sdfleet.trigger_word"] == "zqx" and "zqx" in meta["ss_training_comment"]
    assert json.loads(meta["ss_tag_frequency"])["instance"]["a zqx disc"] == 3
    assert LoraTrainSpec.model_validate_json(meta["sdfleet.spec"]).steps == 9
    assert len(meta["sshs_model_hash"]) == 64


def test_exported_lora_loads_in_the_engine_and_changes_the_image(trained: Trained, tiny: TinyModels) -> None:
    engine = DiffusersEngine(tiny.sd1_file, loras={"zqx-disc": trained.result.lora_path}, device="cpu")

    def render(prompt: str) -> np.ndarray:
        result = engine.generate(JobKind.TXT2IMG, gen_spec(prompt=prompt), lambda _: None, lambda: False)
        return np.asarray(result.images[0].image, dtype=np.int16)

    base = render("a zqx disc")
    with_lora = render("a zqx disc <lora:zqx-disc:1>")
    assert np.abs(base - with_lora).max() > 0
    assert "lora:zqx-disc" in engine.loaded_models()
    assert np.array_equal(base, render("a zqx disc"))  # without the tag: the base model again


# --------------------------------------------------------------------------------------------- exact resume


def test_resume_from_a_checkpoint_is_bit_exact(
    tiny: TinyModels, pictures: list[TrainingImage], tmp_path: Path
) -> None:
    """30 steps in one go == 20 steps, stop, a new trainer elsewhere resumes from the step-20 file, 10 more:
    every LoRA weight equal (torch.equal), with batches crossing epochs, flips, prior preservation with
    generated class images, text-encoder training, noise offset and a warm-up + cosine schedule."""
    spec = make_spec(
        pictures,
        steps=30,
        checkpoint_every=10,
        batch_size=2,
        random_flip=True,
        train_text_encoder=True,
        prior_preservation=True,
        class_prompt="a disc",
        num_class_images=2,
        class_image_steps=2,
        noise_offset=0.05,
        lr_scheduler="cosine",
        lr_warmup_steps=3,
        learning_rate=2e-3,
    )
    straight = LoraTrainer(spec, tiny.sd1_file, pictures, tmp_path / "straight", device="cpu")
    straight_result = straight.run()

    first = LoraTrainer(spec, tiny.sd1_file, pictures, tmp_path / "worker-a", device="cpu")
    seen: list[int] = []
    with pytest.raises(Interrupted) as stopped:
        first.run(
            on_progress=lambda step, *_: seen.append(step), should_stop=lambda: bool(seen) and seen[-1] >= 20
        )
    assert stopped.value.details["step"] == 20
    handed_over = Path(stopped.value.details["checkpoint"])
    assert handed_over.name == "step-00000020.safetensors"
    # the second worker has only the checkpoint file (its own work dir: class images are made again)
    downloaded = tmp_path / "download" / handed_over.name
    downloaded.parent.mkdir()
    shutil.copy(handed_over, downloaded)
    second = LoraTrainer(spec, tiny.sd1_file, pictures, tmp_path / "worker-b", device="cpu")
    resumed_steps: list[int] = []
    result = second.run(resume=downloaded, on_progress=lambda step, *_: resumed_steps.append(step))
    assert resumed_steps == list(range(21, 31))
    assert result.resumed_from == 20

    expected, got = straight.lora_state(), second.lora_state()
    assert expected.keys() == got.keys() and len(expected) > 0
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    at_20 = first.lora_state()
    assert any(not torch.equal(at_20[k], got[k]) for k in got)  # the last 10 steps did move the weights
    exported = [safe_open(str(p), "pt") for p in (straight_result.lora_path, result.lora_path)]
    for key in exported[0].keys():  # noqa: SIM118 - safe_open has keys(), not iteration
        assert torch.equal(exported[0].get_tensor(key), exported[1].get_tensor(key))
    assert straight_result.final_loss == result.final_loss
    for name in ("class-0000.png", "class-0001.png"):
        a = np.asarray(Image.open(tmp_path / "straight" / "class_images" / name))
        b = np.asarray(Image.open(tmp_path / "worker-b" / "class_images" / name))
        assert np.array_equal(a, b)

    # a checkpoint of a run with other training parameters is refused, naming the field
    other = LoraTrainer(
        {**spec, "learning_rate": 1e-3}, tiny.sd1_file, pictures, tmp_path / "c", device="cpu"
    )
    with pytest.raises(ValidationError) as refused:
        other.run(resume=downloaded)
    assert refused.value.field == "resume"


# --------------------------------------------------------------------------------------------- interruption


def test_should_stop_interrupts_between_steps(
    tiny: TinyModels, pictures: list[TrainingImage], tmp_path: Path
) -> None:
    spec = make_spec(pictures, steps=20, checkpoint_every=0)
    with pytest.raises(Interrupted) as at_once:
        LoraTrainer(spec, tiny.sd1_file, pictures, tmp_path / "a", device="cpu").run(should_stop=lambda: True)
    assert at_once.value.details == {"step": 0, "checkpoint": None}
    assert not (tmp_path / "a" / "zqx-disc.safetensors").exists()

    steps: list[int] = []
    saved: list[int] = []
    with pytest.raises(Interrupted) as later:
        LoraTrainer(spec, tiny.sd1_file, pictures, tmp_path / "b", device="cpu").run(
            on_progress=lambda step, *_: steps.append(step),
            on_checkpoint=lambda step, path: saved.append(step),
            should_stop=lambda: len(steps) >= 3,
            checkpoint_on_stop=True,
        )
    assert steps == [1, 2, 3]
    assert later.value.code == "interrupted"
    assert later.value.details["step"] == 3 and saved == [3]
    assert TrainState.load(later.value.details["checkpoint"]).step == 3


def test_a_callbacks_own_exception_passes_through(
    tiny: TinyModels, pictures: list[TrainingImage], tmp_path: Path
) -> None:
    def upload(step: int, path: Path) -> None:
        raise ConnectionError("blob store unreachable")

    trainer = LoraTrainer(make_spec(pictures, steps=3, checkpoint_every=1), tiny.sd1_file, pictures, tmp_path)
    with pytest.raises(ConnectionError, match="unreachable"):
        trainer.run(on_checkpoint=upload)


# --------------------------------------------------------------------------------------------- SDXL


def test_sdxl_trains_both_text_encoders_and_its_lora_loads_in_the_engine(
    tiny: TinyModels, pictures: list[TrainingImage], tmp_path: Path
) -> None:
    spec = make_spec(
        pictures,
        base_model="tiny-sdxl",
        steps=4,
        checkpoint_every=0,
        train_text_encoder=True,
        gradient_checkpointing=True,
        learning_rate=2e-2,
    )
    trainer = LoraTrainer(spec, tiny.sdxl_file, pictures, tmp_path, device="cpu")
    result = trainer.run()
    assert result.arch == "sdxl"
    header = read_header(result.lora_path)
    prefixes = {k.split("_text_model")[0] for k in header.shapes if k.startswith("lora_te")}
    assert prefixes == {"lora_te1", "lora_te2"}
    assert any(k.startswith("lora_unet_") for k in header.shapes)
    assert header.metadata["ss_base_model_version"] == "sdxl_base_v1-0"

    engine = DiffusersEngine(tiny.sdxl_file, loras={"xl-disc": result.lora_path}, device="cpu")

    def render(prompt: str) -> np.ndarray:
        out = engine.generate(JobKind.TXT2IMG, gen_spec(prompt=prompt), lambda _: None, lambda: False)
        return np.asarray(out.images[0].image, dtype=np.int16)

    assert np.abs(render("a zqx disc") - render("a zqx disc <lora:xl-disc:1>")).max() > 0


# --------------------------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"images": []}, "images"),
        ({"resolution": 100}, "resolution"),
        ({"resolution": 4096}, "resolution"),
        ({"steps": 0}, "steps"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"lr_scheduler": "exotic"}, "lr_scheduler"),
        ({"lr_warmup_steps": 3}, "lr_warmup_steps"),  # constant scheduler has no warm-up
        ({"lr_scheduler": "cosine", "lr_warmup_steps": 50}, "lr_warmup_steps"),
        ({"trigger_word": "sks"}, "trigger_word"),
        ({"prior_preservation": True}, "class_prompt"),
        ({"validation_every": 5}, "validation_prompts"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"images": [{"ref": "a.png", "caption": "bad\x00"}]}, "images.0.caption"),
        ({"unknown": 1}, "unknown"),
        ({"name": "bad:name"}, "name"),
    ],
)
def test_spec_errors_name_the_field(
    pictures: list[TrainingImage], overrides: dict[str, Any], field: str
) -> None:
    raw = make_spec(pictures, steps=20)
    raw.update(overrides)
    with pytest.raises(ValidationError) as err:
        LoraTrainSpec.parse(raw)
    assert err.value.field == field
    assert err.value.status == 422
    assert err.value.message.startswith(f"{field}: ")


def test_trainer_inputs_are_checked(tiny: TinyModels, pictures: list[TrainingImage], tmp_path: Path) -> None:
    spec = make_spec(pictures)
    with pytest.raises(ValidationError) as err:
        LoraTrainer(spec, tiny.sd1_file, pictures[:2], tmp_path, device="cpu")
    assert err.value.field == "images"
    with pytest.raises(ValidationError) as err:
        LoraTrainer(spec, tmp_path / "missing.safetensors", pictures, tmp_path, device="cpu")
    assert err.value.field == "base_model"
    parsed = LoraTrainSpec.parse(spec)
    paired = images_from_spec(parsed, {p.path.name: p.path for p in pictures})
    assert [i.caption for i in paired] == [p.caption for p in pictures]
    with pytest.raises(ValidationError) as err:
        images_from_spec(parsed, {})
    assert err.value.field == "images.0.ref"


def test_data_order_is_a_function_of_seed_and_epoch() -> None:
    order = SampleOrder(5, seed=3, stream=0, random_flip=True)
    run = [order.at(p) for p in range(25)]
    assert sorted(i for i, _ in run[:5]) == list(range(5))  # each epoch is a permutation
    fresh = SampleOrder(5, seed=3, stream=0, random_flip=True)
    assert [fresh.at(p) for p in range(12, 25)] == run[12:]  # no state: a resumed stream is the same
    assert [SampleOrder(5, seed=4, stream=0, random_flip=True).at(p) for p in range(25)] != run
    assert order.batch(3, 4) == run[8:12]


def test_checkpoint_retention_keeps_the_newest() -> None:
    keep: CheckpointRetention[str] = CheckpointRetention(2, [(10, "a")])
    assert keep.add(20, "b") == []
    assert keep.add(30, "c") == ["a"]
    assert keep.add(30, "c") == []  # re-uploading the same checkpoint
    assert keep.kept == ["b", "c"] and keep.latest == "c"


def test_a_file_that_is_no_training_checkpoint_is_refused(tiny: TinyModels, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad")
    for path in (tiny.sd1_file, garbage):
        with pytest.raises(ValidationError) as err:
            TrainState.load(path)
        assert err.value.field == "resume"
