"""Pieces of the demo trainer that must be exact: the latent normalisation folded into the VAE, a\ndeterministic posterior, and the caption styles."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from sdfleet.demo.data import random_scene
from sdfleet.demo.train import (
    VAE_CONFIG,
    deterministic_posterior,
    fold_latent_normalisation,
    images_tensor,
)


def test_folding_the_latent_normalisation_into_the_vae_changes_no_picture() -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    rng = random.Random(3)
    pictures = images_tensor([random_scene(rng) for _ in range(16)])
    with torch.no_grad():
        before = vae.encode(pictures).latent_dist
        decoded = vae.decode(before.mean).sample
        centre, spread = before.mean.mean(dim=(0, 2, 3)), before.mean.std(dim=(0, 2, 3))
        fold_latent_normalisation(vae, centre, spread)
        after = vae.encode(pictures).latent_dist
        assert vae.config.scaling_factor == 1.0
        assert after.mean.mean(dim=(0, 2, 3)).abs().max() < 1e-4
        assert after.mean.std(dim=(0, 2, 3)).sub(1).abs().max() < 1e-4
        # the posterior's spread is rescaled with its mean
        assert torch.allclose(after.std, before.std / spread[None, :, None, None], rtol=1e-4)
        assert torch.allclose(vae.decode(after.mean).sample, decoded, atol=1e-4)
        deterministic_posterior(vae)
        sampled = vae.encode(pictures).latent_dist
        assert sampled.std.max() < 1e-6
        assert torch.allclose(sampled.mean, after.mean)


@pytest.mark.parametrize("style", range(7))
def test_every_caption_style_reaches_training(style: int) -> None:
    from sdfleet.demo.data import caption, training_set

    captions = {c for _, c in training_set(2000, seed=0)}
    scenes = [s for s, _ in training_set(2000, seed=0)]
    assert any(caption(s, style) in captions for s in scenes)


def test_a_refitted_autoencoder_keeps_the_denoiser_bit_for_bit(tmp_path: Path) -> None:
    from safetensors import safe_open

    from sdfleet.demo.model import DEMO_CHECKPOINT
    from sdfleet.demo.refit import refit_vae, swap_vae
    from sdfleet.demo.train import TrainConfig

    steps: list[int] = []
    vae = refit_vae(
        DEMO_CHECKPOINT, TrainConfig(vae_steps=2, vae_batch=2), lambda _s, step, _t, _l: steps.append(step)
    )
    assert steps == [1, 2]
    assert vae.config.norm_num_groups == VAE_CONFIG["norm_num_groups"] and vae.config.scaling_factor == 1.0
    assert (
        float(vae.quant_conv.bias[vae.config.latent_channels :].max()) == -30.0
    )  # a deterministic posterior
    out = swap_vae(DEMO_CHECKPOINT, vae, tmp_path / "refit.safetensors")
    with safe_open(str(DEMO_CHECKPOINT), "pt") as old, safe_open(str(out), "pt") as new:
        assert set(old.keys()) == set(new.keys())
        for key in old.keys():  # noqa: SIM118
            if not key.startswith("first_stage_model."):
                assert torch.equal(old.get_tensor(key), new.get_tensor(key)), key
    assert "DDIMScheduler" in (tmp_path / "refit" / "model_index.json").read_text()
