"""Give a trained demo model a new autoencoder without retraining its denoiser: ``sdfleet demo refit-vae``.

Why: the first demo autoencoder drew a magenta/cyan blot at the top-left corner of objects. The cause was
its normalisation: diffusers' AutoencoderKL normalises with GroupNorm of 32 groups, and with 32 channels in
the outer blocks that is one group per channel — instance normalisation, the setting in which a network
learns to plant a strong local spike so it can steer each channel's statistics (StyleGAN's "droplet"
artifact). With 8 groups (:data:`sdfleet.demo.train.VAE_CONFIG`) the artifact does not form (measured on 48
pictures: 9.2 stray pixels a picture, 71% with a blot → 0.04 and 0%).

A new architecture means a new autoencoder, and a new autoencoder would normally mean a new latent space
and a denoiser trained again (80 minutes here). Instead the new one is fitted to the old one's latent
space: its encoder learns to give the old encoder's latents (posterior means, already normalised), and its
decoder learns to draw the picture from the old encoder's latents (with a little noise, as the denoiser's
latents are never exact). The denoiser and text encoder are kept bit for bit; img2img and the LoRA trainer
see latents within a small distance of the ones the denoiser learned on.
"""

from __future__ import annotations

import logging
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdfleet.demo.data import random_scene
from sdfleet.demo.train import (
    VAE_CONFIG,
    AutoencoderKL,
    CLIPTokenizer,
    ProgressFn,
    StableDiffusionPipeline,
    TrainConfig,
    assemble,
    deterministic_posterior,
    image_grad,
    images_tensor,
    load_vae,
    lr_factor,
    save_checkpoint,
    write_config_folder,
)
from sdfleet.engine.sd.tokenizer import write_tokenizer

log = logging.getLogger("sdfleet.demo")

LATENT_NOISE = 0.05
"""The spread of the noise added to the old encoder's latents before the new decoder sees them."""


def refit_vae(
    checkpoint: Path, config: TrainConfig, progress: ProgressFn, noise: float = LATENT_NOISE
) -> Any:
    """A new autoencoder (``VAE_CONFIG``) in the latent space of ``checkpoint``'s: ``config.vae_steps`` steps
    on freshly drawn pictures, the encoder on the MSE to the old latents, the decoder on the first stage's
    reconstruction loss from the old latents (plus ``noise``)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    old = load_vae(checkpoint)
    for parameter in old.parameters():
        parameter.requires_grad_(False)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + 1)
    new = AutoencoderKL(**VAE_CONFIG)
    optimiser = torch.optim.AdamW(new.parameters(), lr=config.vae_lr, weight_decay=0.0)
    new.train()
    for step in range(config.vae_steps):
        for group in optimiser.param_groups:
            group["lr"] = config.vae_lr * lr_factor(step, config.vae_steps, 100)
        x = images_tensor([random_scene(rng) for _ in range(config.vae_batch)])
        with torch.no_grad():
            target = old.encode(x).latent_dist.mean
        mean = new.encode(x).latent_dist.mean
        rec = new.decode(target + noise * torch.randn_like(target)).sample
        gy, gx = image_grad(rec)
        ty, tx = image_grad(x)
        loss = (
            F.l1_loss(rec, x)
            + F.mse_loss(rec, x)
            + 0.5 * (F.l1_loss(gy, ty) + F.l1_loss(gx, tx))
            + F.mse_loss(mean, target)
        )
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(new.parameters(), 1.0)
        optimiser.step()
        progress("vae", step + 1, config.vae_steps, float(loss))
    new.eval()
    deterministic_posterior(new)
    new.register_to_config(scaling_factor=1.0)
    return new


def load_pipeline(checkpoint: Path) -> Any:
    """The whole demo pipeline of ``checkpoint`` in fp32 (its configs come from the file's metadata)."""
    from sdfleet.engine.sd.checkpoints import config_folder, embedded_configs, read_header

    folder = config_folder("sd1", embedded=embedded_configs(read_header(checkpoint).metadata))
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer(Path(scratch))), model_max_length=77)
    pipe = StableDiffusionPipeline.from_single_file(
        str(checkpoint),
        config=str(folder),
        local_files_only=True,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float32)
    return pipe


def swap_vae(checkpoint: Path, vae: Any, out: Path) -> Path:
    """Write ``checkpoint`` with ``vae`` as its autoencoder to ``out`` (fp16 single file, configs in its
    metadata and as the folder beside it); the denoiser and text encoder are copied unchanged."""
    loaded = load_pipeline(checkpoint)
    # assembled as the trainer does (its DDIM schedule), not with the scheduler a single-file load defaults to
    pipe = assemble(vae, loaded.unet, loaded.text_encoder, loaded.tokenizer)
    save_checkpoint(pipe, out)
    write_config_folder(pipe, out.parent / out.stem)
    log.info("demo.vae_swapped checkpoint=%s out=%s", checkpoint, out)
    return out


__all__ = ["LATENT_NOISE", "load_pipeline", "refit_vae", "swap_vae"]
