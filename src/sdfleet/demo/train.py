"""Train the demo model: a tiny Stable Diffusion 1.x (AutoencoderKL + UNet2DConditionModel + CLIP text
encoder with the real CLIP tokenizer) on the procedural pictures of :mod:`sdfleet.demo.data`, on CPU.

Three stages, reproducible from one seed:

1. **VAE** (64×64 px → 16×16×4 latents): L1 + MSE + an edge (image-gradient) term so shape corners stay
   sharp, and a tiny KL weight.
2. **Latents**: every training picture encoded once (the posterior means; see :func:`encode_latents`),
   then each latent channel normalised to zero mean and unit variance. The normalisation is folded into
   the VAE's ``quant_conv``/``post_quant_conv`` (:func:`fold_latent_normalisation`), so the file is a
   plain SD 1.x checkpoint with ``scaling_factor`` 1 and every engine encodes and decodes it unchanged.
3. **UNet + text encoder** jointly: epsilon prediction on SD's scaled-linear 1000-step schedule, min-SNR-5
   loss weighting, offset noise (solid dark and bright backgrounds), 10% empty captions for
   classifier-free guidance, AdamW with warm-up and cosine decay, gradient clipping, and an exponential
   moving average of the weights (the EMA is what ships).

The result is written as one fp16 single-file checkpoint in the original SD 1.x key layout, its
components' configs in the file's metadata — loaded by the engine exactly like any SD 1.x checkpoint.
Snapshots are written along the way (``snapshot-<step>.safetensors``) so a long run can be evaluated
while it trains.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sdfleet.demo.data import RESOLUTION, random_scene, render, training_set
from sdfleet.engine.sd.convert import pipeline_configs, write_single_file
from sdfleet.engine.sd.tokenizer import write_tokenizer

log = logging.getLogger("sdfleet.demo")
# diffusers and transformers ship no usable type information: keep them Any at the boundary
_diffusers: Any = importlib.import_module("diffusers")
_transformers: Any = importlib.import_module("transformers")
AutoencoderKL = _diffusers.AutoencoderKL
DDIMScheduler = _diffusers.DDIMScheduler
DDPMScheduler = _diffusers.DDPMScheduler
StableDiffusionPipeline = _diffusers.StableDiffusionPipeline
UNet2DConditionModel = _diffusers.UNet2DConditionModel
CLIPTextConfig = _transformers.CLIPTextConfig
CLIPTextModel = _transformers.CLIPTextModel
CLIPTokenizer = _transformers.CLIPTokenizer

VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "sample_size": RESOLUTION,
    # not diffusers' 32: with 32 channels that is one group per channel (instance norm), and the decoder then
    # learns a spike that steers the statistics and shows as a blot (see sdfleet.demo.refit)
    "norm_num_groups": 8,
}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION // 4,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (64, 128),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
}
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


@dataclass(slots=True)
class TrainConfig:
    """Every knob of a demo training run; the defaults are the shipped model's."""

    seed: int = 0
    images: int = 24_000
    vae_steps: int = 1_200
    vae_batch: int = 12
    vae_lr: float = 1e-3
    unet_steps: int = 3_600
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 200
    cfg_dropout: float = 0.1
    offset_noise: float = 0.1
    min_snr: float = 5.0
    ema_decay: float = 0.999  # 0: no EMA; the raw weights ship
    snapshot_every: int = 1_000
    threads: int | None = None
    vae_from: str | None = None  # take the autoencoder from this checkpoint instead of stage 1


ProgressFn = Callable[[str, int, int, float], None]


def images_tensor(scenes: list[Any]) -> torch.Tensor:
    """Render ``scenes`` as one batch in [-1, 1], NCHW."""
    arrays = np.stack([np.asarray(render(s), dtype=np.float32) for s in scenes])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def image_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The vertical and horizontal differences of neighbouring pixels (the edge term of the VAE's loss)."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def train_vae(config: TrainConfig, progress: ProgressFn) -> Any:
    """Stage 1: the autoencoder, on freshly drawn pictures every step."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + 1)
    vae = AutoencoderKL(**VAE_CONFIG)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    vae.train()
    for step in range(config.vae_steps):
        for group in optimiser.param_groups:
            group["lr"] = config.vae_lr * lr_factor(step, config.vae_steps, 100)
        x = images_tensor([random_scene(rng) for _ in range(config.vae_batch)])
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        gy, gx = image_grad(rec)
        ty, tx = image_grad(x)
        loss = (
            F.l1_loss(rec, x)
            + F.mse_loss(rec, x)
            + 0.5 * (F.l1_loss(gy, ty) + F.l1_loss(gx, tx))
            + 1e-6 * posterior.kl().mean()
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        progress("vae", step + 1, config.vae_steps, float(loss))
    vae.eval()
    return vae


def load_vae(checkpoint: Path) -> Any:
    """The autoencoder of a checkpoint this module wrote (its configs are in the file's metadata)."""
    from sdfleet.engine.sd.checkpoints import config_folder, embedded_configs, read_header

    folder = config_folder("sd1", embedded=embedded_configs(read_header(checkpoint).metadata))
    vae = AutoencoderKL.from_single_file(
        str(checkpoint), config=str(folder), subfolder="vae", local_files_only=True
    )
    vae.to(torch.float32)
    vae.eval()
    return vae


def settle_file(checkpoint: Path) -> Path:
    """Bring a demo checkpoint written by an older trainer up to date, in place: a deterministic
    posterior (:func:`deterministic_posterior`, applied to the file's ``quant_conv`` tensors) and embedded
    configs without diffusers' ``_use_default_values`` (which made loaders drop the VAE's scaling factor).
    Every other tensor is left bit for bit."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sdfleet.engine.sd.checkpoints import CONFIG_METADATA_KEY

    with safe_open(str(checkpoint), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    weight = tensors["first_stage_model.quant_conv.weight"]
    bias = tensors["first_stage_model.quant_conv.bias"]
    channels = weight.shape[0] // 2
    weight[channels:] = 0
    bias[channels:] = -30.0
    configs = json.loads(metadata[CONFIG_METADATA_KEY])
    for config in configs.values():
        if isinstance(config, dict):
            config.pop("_use_default_values", None)
    metadata[CONFIG_METADATA_KEY] = json.dumps(configs)
    staging = checkpoint.with_suffix(".tmp")
    save_file(tensors, str(staging), metadata=metadata)
    staging.replace(checkpoint)
    return checkpoint


@torch.no_grad()
def reconstruction_accuracy(vae: Any, count: int = 120, seed: int = 7) -> dict[str, float]:
    """How often the checks read a VAE round trip of a held-out picture right (an upper bound for the model)."""
    from sdfleet.demo.checks import read_picture
    from sdfleet.demo.data import held_out_set

    pairs = held_out_set(max(1, count // 12), seed)
    x = images_tensor([s for s, _ in pairs])
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    pixels = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    hits = {"colour": 0, "background": 0, "shape": 0}
    from PIL import Image

    for (scene, _), array in zip(pairs, pixels, strict=True):
        reading = read_picture(Image.fromarray(array))
        hits["colour"] += reading.colour == scene.colour
        hits["background"] += reading.background == scene.background
        hits["shape"] += reading.shape == scene.shape
    return {k: v / len(pairs) for k, v in hits.items()}


@torch.no_grad()
def encode_latents(
    vae: Any, config: TrainConfig, tokenizer: Any, progress: ProgressFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: the normalised latents (posterior means) and token ids of every training picture.

    The means, not samples: with a tiny KL weight the posterior's own noise is larger than the spread of
    the means. The autoencoder is changed in place so that its latents have zero mean and unit variance
    per channel (:func:`fold_latent_normalisation`): without it most of the latents' variance is a
    constant offset per channel, the picture's own signal sits at a fraction of unit variance, and
    colours and backgrounds drown in the diffusion noise."""
    pairs = list(training_set(config.images, config.seed + 2))
    means, ids = [], []
    chunk = 64
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        means.append(vae.encode(images_tensor([s for s, _ in part])).latent_dist.mean.clone())
        tokens = tokenizer(
            [c for _, c in part], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        ids.append(tokens.input_ids)
        progress("latents", min(start + chunk, len(pairs)), len(pairs), 0.0)
    mean = torch.cat(means)
    centre = mean.mean(dim=(0, 2, 3))
    spread = mean.std(dim=(0, 2, 3))
    log.info("demo.latent_channels mean=%s std=%s", centre.tolist(), spread.tolist())
    fold_latent_normalisation(vae, centre, spread)
    deterministic_posterior(vae)
    normalised = (mean - centre[None, :, None, None]) / spread[None, :, None, None]
    return normalised, torch.cat(ids)


@torch.no_grad()
def fold_latent_normalisation(vae: Any, centre: torch.Tensor, spread: torch.Tensor) -> None:
    """Make ``vae`` encode to ``(z - centre) / spread`` per channel and decode from it, exactly.

    ``quant_conv`` (1×1, outputs the posterior's mean and log-variance) is rescaled so the mean comes out
    normalised and the log-variance shrinks by ``2·log(spread)``; ``post_quant_conv`` (1×1) takes the
    normalised latent back first. ``scaling_factor`` becomes 1: the scale is in the weights.
    """
    centre = centre.to(torch.float32)
    spread = spread.to(torch.float32)
    channels = centre.shape[0]
    quant = vae.quant_conv
    quant.weight[:channels] /= spread[:, None, None, None]
    quant.bias[:channels] = (quant.bias[:channels] - centre) / spread
    quant.bias[channels:] -= 2 * torch.log(spread)
    post = vae.post_quant_conv
    post.bias += post.weight[:, :, 0, 0] @ centre
    post.weight *= spread[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)


@torch.no_grad()
def deterministic_posterior(vae: Any) -> None:
    """Make ``vae`` encode to its posterior mean, with a negligible spread (log-variance −30).

    The denoiser learns on posterior means; with the tiny KL weight the posterior's own spread is as
    large as the signal in some channels, so anything that samples it — img2img, the LoRA trainer, as
    in every SD tool — would see noise the model never saw."""
    channels = vae.config.latent_channels
    vae.quant_conv.weight[channels:] = 0
    vae.quant_conv.bias[channels:] = -30.0


def train_denoiser(
    config: TrainConfig,
    latents: tuple[torch.Tensor, torch.Tensor],
    tokenizer: Any,
    progress: ProgressFn,
    snapshot: Callable[[Any, Any, int], None],
) -> tuple[Any, Any]:
    """Stage 3: UNet and text encoder together on the cached latents.

    Returns the EMA weights when ``config.ema_decay`` is set (else the raw ones); ``snapshot`` gets the
    same, every ``config.snapshot_every`` steps."""
    mean, ids = latents
    torch.manual_seed(config.seed + 3)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    ema = _Ema((unet, text_encoder), config.ema_decay) if config.ema_decay else None
    schedule = DDPMScheduler(**SCHEDULE)
    alphas = schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(config.seed + 4)
    unet.train()
    text_encoder.train()
    n = mean.shape[0]
    for step in range(config.unet_steps):
        for group in optimiser.param_groups:
            group["lr"] = config.lr * lr_factor(step, config.unet_steps, config.warmup)
        index = torch.randint(0, n, (config.batch,), generator=generator)
        z = mean[index]
        tokens = ids[index].clone()
        drop = torch.rand(config.batch, generator=generator) < config.cfg_dropout
        tokens[drop] = empty
        noise = torch.randn(z.shape, generator=generator)
        noise = noise + config.offset_noise * torch.randn((z.shape[0], z.shape[1], 1, 1), generator=generator)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (config.batch,), generator=generator)
        noisy = schedule.add_noise(z, noise, t)
        cond = text_encoder(tokens)[0]
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        weight = torch.clamp(snr[t], max=config.min_snr) / snr[t]
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        if ema is not None:
            ema.update(step)
        progress("unet", step + 1, config.unet_steps, float(loss))
        if config.snapshot_every and (step + 1) % config.snapshot_every == 0 and step + 1 < config.unet_steps:
            unet.eval()
            text_encoder.eval()
            if ema is not None:
                with ema.swapped():
                    snapshot(unet, text_encoder, step + 1)
            else:
                snapshot(unet, text_encoder, step + 1)
            unet.train()
            text_encoder.train()
    unet.eval()
    text_encoder.eval()
    if ema is not None:
        ema.copy_to_models()
    return unet, text_encoder


class _Ema:
    """An exponential moving average of some modules' parameters, with the usual warm-up
    (``decay_t = min(decay, (1 + t) / (10 + t))``) so a short run is not dominated by its start."""

    def __init__(self, modules: tuple[Any, ...], decay: float) -> None:
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to_models(self) -> None:
        for param, shadow in zip(self.params, self.shadow, strict=True):
            param.copy_(shadow)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The models hold the EMA weights inside the block, their own weights again after it."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to_models()
        try:
            yield
        finally:
            with torch.no_grad():
                for param, own in zip(self.params, saved, strict=True):
                    param.copy_(own)


def assemble(vae: Any, unet: Any, text_encoder: Any, tokenizer: Any) -> Any:
    """A stock :class:`StableDiffusionPipeline` of the three trained parts."""
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_checkpoint(pipe: Any, path: Path) -> Path:
    """Write the pipeline as one fp16 single-file SD 1.x checkpoint (configs in its metadata)."""
    half = StableDiffusionPipeline(**{**pipe.components})
    half.to(torch.float16)
    try:
        write_single_file(half, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    finally:
        pipe.to(torch.float32)
    return path


def write_config_folder(pipe: Any, folder: Path) -> Path:
    """The checkpoint's diffusers configs as a folder, for ``from_single_file(path, config=folder)``
    in plain diffusers (our engine reads the same configs from the file's metadata)."""
    for component, config in pipeline_configs(pipe).items():
        if component.startswith("tokenizer"):
            continue
        if component == "model_index":
            config = {
                **config,
                "_diffusers_version": _diffusers.__version__,
                **{
                    name: [
                        "diffusers" if name in ("unet", "vae", "scheduler") else "transformers",
                        type(getattr(pipe, name)).__name__,
                    ]
                    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
                },
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            }
            target = folder / "model_index.json"
        elif component == "scheduler":
            target = folder / "scheduler" / "scheduler_config.json"
        else:
            target = folder / component / "config.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def train(config: TrainConfig, out: Path, work: Path, progress: ProgressFn) -> Path:
    """Run all three stages; write ``out`` (the checkpoint) and ``work/…`` (snapshots, the run's record)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    work.mkdir(parents=True, exist_ok=True)
    random.seed(config.seed)
    np.random.seed(config.seed)
    write_tokenizer(work / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(work / "tokenizer"), model_max_length=77)
    timings: dict[str, float] = {}
    started = time.monotonic()
    vae = load_vae(Path(config.vae_from)) if config.vae_from else train_vae(config, progress)
    timings["vae_seconds"] = time.monotonic() - started
    vae_accuracy = reconstruction_accuracy(vae)
    log.info("demo.vae_done accuracy=%s", vae_accuracy)
    (work / "vae.json").write_text(json.dumps(vae_accuracy))
    mark = time.monotonic()
    latents = encode_latents(vae, config, tokenizer, progress)
    timings["latents_seconds"] = time.monotonic() - mark
    mark = time.monotonic()

    def snapshot(unet: Any, text_encoder: Any, step: int) -> None:
        save_checkpoint(assemble(vae, unet, text_encoder, tokenizer), work / f"snapshot-{step}.safetensors")
        log.info("demo.snapshot step=%d", step)

    unet, text_encoder = train_denoiser(config, latents, tokenizer, progress, snapshot)
    timings["unet_seconds"] = time.monotonic() - mark
    timings["total_seconds"] = time.monotonic() - started
    pipe = assemble(vae, unet, text_encoder, tokenizer)
    save_checkpoint(pipe, out)
    write_config_folder(pipe, out.parent / out.stem)
    record = {
        "config": asdict(config),
        "timings": timings,
        "latent_std_after_normalisation": float(latents[0].std()),
        "vae_reconstruction_accuracy": vae_accuracy,
    }
    (work / "run.json").write_text(json.dumps(record, indent=2))
    return out
