"""Loading (single file, folder, SDXL, pickle refusal, hashes) and LoRA adapters on the tiny models."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sdfleet.domain import JobKind
from sdfleet.engine.base import GenerationResult
from sdfleet.engine.sd.checkpoints import SD1, SDXL, SDXL_REFINER, HashCache, detect_arch, read_header
from sdfleet.engine.sd.engine import DiffusersEngine
from sdfleet.errors import ConfigError, ValidationError
from sdfleet.testing.tiny_models import TinyModels
from tests.engine.conftest import spec

Run = Callable[..., GenerationResult]


def pixels(result: GenerationResult) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def test_architecture_is_detected_from_the_keys(tiny: TinyModels) -> None:
    assert detect_arch(read_header(tiny.sd1_file).shapes).arch == SD1
    assert detect_arch(read_header(tiny.sdxl_file).shapes).arch == SDXL
    assert detect_arch(read_header(tiny.refiner_file).shapes).arch == SDXL_REFINER
    assert detect_arch(read_header(tiny.sd1_inpaint_file).shapes).in_channels == 9


def test_single_file_and_folder_give_identical_images(run: Run, tiny: TinyModels) -> None:
    from_file = run(spec())
    from_folder = run(spec(model="sd1-folder"))
    assert np.array_equal(pixels(from_file), pixels(from_folder))


def test_model_hash_is_the_file_sha256_prefix(engine: DiffusersEngine, run: Run, tiny: TinyModels) -> None:
    digest = hashlib.sha256(tiny.sd1_file.read_bytes()).hexdigest()
    text = run(spec()).images[0].infotext
    assert f"Model hash: {digest[:10]}, Model: tiny-sd1," in text
    assert (tiny.sd1_file.parent / (tiny.sd1_file.name + ".sha256")).read_text().split()[0] == digest


def test_kohya_lora_changes_the_output_and_a_job_without_it_restores_the_base(
    engine: DiffusersEngine, run: Run
) -> None:
    base = run(spec())
    loads = engine.store.loads
    with_lora = run(spec(prompt="a photo of a cat <lora:tinykohya:1>"))
    assert not np.array_equal(pixels(base), pixels(with_lora))
    half = run(spec(prompt="a photo of a cat <lora:tinykohya:0.5>"))
    assert not np.array_equal(pixels(half), pixels(with_lora))
    again = run(spec())
    assert np.array_equal(pixels(base), pixels(again))
    assert engine.store.loads == loads  # the base model was not reloaded
    assert "lora:tinykohya" in engine.loaded_models()
    text = with_lora.images[0].infotext
    assert "<lora:tinykohya:1>" in text and 'Lora hashes: "tinykohya: ' in text


def test_peft_format_lora_from_the_spec_applies(run: Run) -> None:
    base = run(spec())
    with_lora = run(spec(loras=[{"name": "tinypeft", "weight": 1.0}]))
    assert not np.array_equal(pixels(base), pixels(with_lora))
    assert "<lora:tinypeft:1>" in with_lora.images[0].infotext
    assert np.array_equal(pixels(base), pixels(run(spec())))


def test_unknown_lora_is_a_validation_error(run: Run) -> None:
    with pytest.raises(ValidationError) as err:
        run(spec(prompt="cat <lora:nope:1>"))
    assert err.value.field == "loras"


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ConfigError, match="pickle"):
        DiffusersEngine(ckpt, device="cpu")


def test_unknown_model_names_the_field(run: Run) -> None:
    with pytest.raises(ValidationError) as err:
        run(spec(model="no-such-model"))
    assert err.value.field == "model"


def test_sdxl_tiny_model_generates_and_hands_off_to_a_refiner(run: Run) -> None:
    result = run(spec(model="xl", steps=2))
    assert result.images[0].image.size == (32, 32)
    assert "Model: xl," in result.images[0].infotext
    refined = run(
        spec(model="xl", steps=4, refiner_checkpoint="xl", refiner_switch_at=0.5, sampler_name="Euler")
    )
    assert refined.info["steps"] == 4
    assert "Refiner: xl [" in refined.images[0].infotext


def test_capabilities_and_loaded_models(engine: DiffusersEngine) -> None:
    caps = engine.capabilities()
    assert caps.device == "cpu" and "txt2img" in caps.kinds and "lora" in caps.features
    assert set(caps.archs) == {"sd1", "sd2", "sdxl"}
    assert engine.loaded_models()[0] in {"tiny-sd1", "sd1-folder", "xl"}


def test_the_cache_evicts_least_recently_used_checkpoints_over_budget(tiny: TinyModels) -> None:
    small = DiffusersEngine(
        tiny.sd1_file, models={"folder": tiny.sd1_dir}, memory_budget_bytes=1, device="cpu"
    )
    assert small.loaded_models() == ["tiny-sd1"]
    small.generate(JobKind.TXT2IMG, spec(model="folder", steps=1), lambda s: None, lambda: False)
    assert small.loaded_models() == ["folder"]
    assert small.store.loads == 2


def test_load_engine_builds_the_diffusers_engine(tiny: TinyModels) -> None:
    from sdfleet.engine import load_engine

    built = load_engine("diffusers", model=str(tiny.sd1_dir), device="cpu", fake_step_seconds=0)
    assert built.name == "diffusers" and built.loaded_models() == ["tiny-sd1"]
    with pytest.raises(ConfigError):
        load_engine("diffusers", model=None, device="cpu", fake_step_seconds=0)


def test_a_config_value_set_after_construction_survives_the_single_file(tmp_path: Path) -> None:
    """diffusers resets keys listed in ``_use_default_values`` on load; a trained VAE's scaling factor
    (set with ``register_to_config``) must reach the engine, or every latent is decoded at the wrong scale."""
    import torch

    from sdfleet.engine.sd.convert import write_single_file
    from sdfleet.engine.sd.models import ModelStore
    from sdfleet.testing.tiny_models import build_tiny_sd1

    pipe = build_tiny_sd1(tmp_path / "build")
    pipe.vae.register_to_config(scaling_factor=0.6594)
    path = write_single_file(pipe, tmp_path / "scaled.safetensors")
    store = ModelStore(
        device=torch.device("cpu"),
        dtype=torch.float32,
        budget_bytes=1 << 30,
        allow_pickle=False,
        hashes=HashCache(),
    )
    loaded = store.get(path)
    assert loaded.pipe.vae.config.scaling_factor == pytest.approx(0.6594)
