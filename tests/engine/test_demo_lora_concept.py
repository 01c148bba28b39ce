"""A LoRA teaches the demo model a colour it has never seen: pictures of orange shapes under a made-up
trigger word, trained through the normal trainer and used through the normal engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdfleet.demo.concept import TRIGGER, concept_pictures, measure
from sdfleet.demo.evaluate import engine_drawer
from sdfleet.demo.model import DEMO_CHECKPOINT, DEMO_RESOLUTION, demo_available
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.training.data import TrainingImage
from sdfleet.training.trainer import LoraTrainer

pytestmark = pytest.mark.skipif(not demo_available(), reason="the demo checkpoint is not in the package")


def test_a_lora_teaches_the_demo_model_orange(tmp_path: Path) -> None:
    pictures = concept_pictures(tmp_path / "pictures", count=12)
    spec = LoraTrainSpec.parse(
        {
            "name": "orange-concept",
            "base_model": "sdfleet-demo",
            "images": [{"ref": str(p), "caption": c} for p, c in pictures],
            "instance_prompt": f"a {TRIGGER} shape",
            "trigger_word": TRIGGER,
            "resolution": DEMO_RESOLUTION,
            "steps": 150,
            "batch_size": 4,
            "rank": 8,
            "learning_rate": 5e-3,
            "train_text_encoder": True,
            "seed": 3,
        }
    )
    trainer = LoraTrainer(
        spec, DEMO_CHECKPOINT, [TrainingImage(p, c) for p, c in pictures], tmp_path / "work", device="cpu"
    )
    result = trainer.run()
    draw = engine_drawer(DEMO_CHECKPOINT, steps=16, device="cpu", loras={"orange-concept": result.lora_path})
    scores = measure(draw, "orange-concept", seeds=range(1, 5))
    print(scores)
    # measured: 0% of object pixels orange without the LoRA, 20% with it (150 steps, 12 pictures); shape
    # and background still right in 100%. The ceiling is the demo VAE's: fit on the six demo colours, it
    # gives back 30% of the training pictures' own orange pixels as orange after an encode/decode.
    assert scores.orange_with >= scores.orange_without + 0.12, scores
    assert scores.shape_with >= 0.6 and scores.background_with >= 0.9, scores
