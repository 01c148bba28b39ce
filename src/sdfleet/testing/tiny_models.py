"""Tiny random Stable Diffusion models built offline, for tests, benchmarks and demos.

Nothing here downloads anything. :func:`build_tiny_models` makes, under one folder:

- a tiny SD 1.x pipeline (about 3 M parameters) and a tiny SDXL pipeline (about 6.5 M), each saved as a
  diffusers folder **and** as a single-file ``.safetensors`` checkpoint in the original (LDM/SGM) key
  layout users download (the diffusers→single-file converter is :func:`write_single_file`);
- LoRA files for the SD 1.x model in the kohya format (``lora_unet_…``/``lora_te_…``, ``alpha``) and in
  the diffusers/peft format (``unet.….lora_A.weight``), random but strong enough to change the image;
- a textual-inversion embedding in A1111's ``emb_params`` format;
- two upscalers, ×4: an ESRGAN (RRDBNet, BasicSR key layout) and a Real-ESRGAN Compact (SRVGG) under
  ``upscalers/`` (:func:`write_tiny_upscaler`; ESRGAN's original layout with ``layout="old"``);
- two ControlNets under ``controlnet/``: one for the SD 1.x model in the original key layout and one for the
  SDXL model in the diffusers layout, their zero convolutions perturbed (:func:`write_tiny_controlnet`);
- IP-Adapters under ``ipadapter/`` (plain and Plus for the SD 1.x model, plain for SDXL) and the tiny CLIP
  vision encoder they read under ``image_encoder/`` (:mod:`sdfleet.testing.tiny_ipadapter`).

The tokenizer is the real CLIP BPE tokenizer (see :mod:`sdfleet.engine.sd.tokenizer`). Single files we
write carry their components' diffusers configs in the safetensors metadata (key
``sdfleet.diffusers_config``), which the engine prefers to its shipped configs, because tiny shapes cannot
be inferred from the keys.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from sdfleet.engine.sd.checkpoints import CONFIG_METADATA_KEY
from sdfleet.engine.sd.convert import pipeline_configs, single_file_state, write_single_file
from sdfleet.engine.sd.tokenizer import write_tokenizer
from sdfleet.testing.tiny_ipadapter import write_tiny_image_encoder, write_tiny_ip_adapter

__all__ = [
    "CONFIG_METADATA_KEY",
    "TinyModels",
    "build_tiny_models",
    "build_tiny_refiner",
    "build_tiny_sd1",
    "build_tiny_sdxl",
    "pipeline_configs",
    "single_file_state",
    "write_embedding",
    "write_lora",
    "write_single_file",
    "write_tiny_controlnet",
    "write_tiny_image_encoder",
    "write_tiny_ip_adapter",
]

_diffusers: Any = importlib.import_module("diffusers")
_transformers: Any = importlib.import_module("transformers")

_VAE: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "latent_channels": 4,
    "layers_per_block": 1,
    "sample_size": 64,
}
_SD1_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
}
_SDXL_UNET: dict[str, Any] = {
    **_SD1_UNET,
    "cross_attention_dim": 96,
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "transformer_layers_per_block": (1, 1),
    "projection_class_embeddings_input_dim": 80,
}
_CLIP: dict[str, Any] = {
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
}
_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}


def tokenizer(folder: Path, *, pad_token: str = "<|endoftext|>") -> Any:
    """The real CLIP tokenizer, written into ``folder`` and loaded from there."""
    write_tokenizer(folder, pad_token=pad_token)
    return _transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def build_tiny_sd1(work: Path, seed: int = 0, *, in_channels: int = 4) -> Any:
    """A tiny random SD 1.x :class:`StableDiffusionPipeline` (recipe configs), float32 on CPU.

    ``in_channels=9`` gives an inpainting model (latents + mask + masked-image latents)."""
    torch.manual_seed(seed)
    vae = _diffusers.AutoencoderKL(**_VAE)
    unet = _diffusers.UNet2DConditionModel(**{**_SD1_UNET, "in_channels": in_channels})
    text_encoder = _transformers.CLIPTextModel(_transformers.CLIPTextConfig(**_CLIP))
    scheduler = _diffusers.DDIMScheduler(**_SCHEDULER, clip_sample=False, set_alpha_to_one=False)
    return _diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(work / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(work: Path, seed: int = 0) -> Any:
    """A tiny random SDXL :class:`StableDiffusionXLPipeline`; its two encoders have hidden sizes 32 and 64."""
    torch.manual_seed(seed)
    vae = _diffusers.AutoencoderKL(**_VAE)
    unet = _diffusers.UNet2DConditionModel(**_SDXL_UNET)
    text_encoder = _transformers.CLIPTextModel(_transformers.CLIPTextConfig(**_CLIP))
    text_encoder_2 = _transformers.CLIPTextModelWithProjection(
        _transformers.CLIPTextConfig(**{**_CLIP, "hidden_size": 64, "projection_dim": 32})
    )
    scheduler = _diffusers.EulerDiscreteScheduler(**_SCHEDULER, timestep_spacing="leading")
    tok = tokenizer(work / "tokenizer")
    return _diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=scheduler,
    )


def build_tiny_refiner(work: Path, seed: int = 0) -> Any:
    """A tiny random SDXL refiner (:class:`StableDiffusionXLImg2ImgPipeline`): only the OpenCLIP encoder
    (hidden 64) and a UNet conditioned on size and aesthetic score (5 time ids)."""
    torch.manual_seed(seed)
    unet_config = {
        **_SDXL_UNET,
        "cross_attention_dim": 64,
        "projection_class_embeddings_input_dim": 5 * 8 + 32,
    }
    text_encoder_2 = _transformers.CLIPTextModelWithProjection(
        _transformers.CLIPTextConfig(**{**_CLIP, "hidden_size": 64, "projection_dim": 32})
    )
    return _diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=_diffusers.AutoencoderKL(**_VAE),
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer(work / "tokenizer"),
        unet=_diffusers.UNet2DConditionModel(**unet_config),
        scheduler=_diffusers.EulerDiscreteScheduler(**_SCHEDULER, timestep_spacing="leading"),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


# ------------------------------------------------------------------------------------------ LoRA, TI

_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _lora_pairs(
    pipe: Any, rank: int, strength: float, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) pairs for every UNet attention and text-encoder attention projection.

    Keys are ``unet.<module>`` / ``text_encoder.<module>`` with the modules' own names in this
    diffusers/transformers version.
    """
    generator = torch.Generator().manual_seed(seed)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for prefix, model, targets in (
        ("unet", pipe.unet, _UNET_TARGETS),
        ("text_encoder", pipe.text_encoder, _TE_TARGETS),
    ):
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(targets):
                down = torch.randn(rank, module.in_features, generator=generator) / module.in_features**0.5
                up = torch.randn(module.out_features, rank, generator=generator) * strength / rank**0.5
                pairs[f"{prefix}.{name}"] = (down, up)
    return pairs


def write_lora(
    pipe: Any,
    path: Path,
    *,
    fmt: Literal["kohya", "peft"],
    rank: int = 4,
    strength: float = 1.0,
    seed: int = 1234,
) -> Path:
    """Write a random LoRA for ``pipe`` (SD 1.x) in the kohya or the diffusers/peft format.

    kohya: ``lora_unet_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
    (alpha = rank, so the scale is 1) and ``lora_te_text_model_…`` for the text encoder. peft:
    ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` and ``text_encoder.<module>.…``.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, (down, up) in _lora_pairs(pipe, rank, strength, seed).items():
        prefix, module = key.split(".", 1)
        if fmt == "peft":
            tensors[f"{key}.lora_A.weight"] = down
            tensors[f"{key}.lora_B.weight"] = up
            continue
        if prefix == "text_encoder":
            module = module if module.startswith("text_model.") else "text_model." + module
            name = "lora_te_" + module.replace(".", "_")
        else:
            name = "lora_unet_" + module.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "ss_network_module": "networks.lora"})
    return path


def write_embedding(path: Path, *, dim: int, vectors: int = 2, seed: int = 99, scale: float = 1.0) -> Path:
    """A textual-inversion embedding in A1111's safetensors format: ``{"emb_params": [vectors, dim]}``."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(vectors, dim, generator=generator) * scale}, str(path))
    return path


# ------------------------------------------------------------------------------------------ the whole set


@dataclass(frozen=True, slots=True)
class TinyModels:
    """Paths of one set of tiny models (see :func:`build_tiny_models`)."""

    root: Path
    sd1_dir: Path
    sd1_file: Path
    sdxl_dir: Path
    sdxl_file: Path
    lora_kohya: Path
    lora_peft: Path
    embedding: Path
    sd1_inpaint_file: Path
    vae_dir: Path
    refiner_file: Path
    rrdb_file: Path
    srvgg_file: Path
    controlnet_sd1_file: Path
    controlnet_sdxl_file: Path
    ip_adapter_sd1_file: Path
    ip_adapter_plus_sd1_file: Path
    ip_adapter_sdxl_file: Path
    image_encoder_file: Path

    @property
    def loras(self) -> dict[str, Path]:
        """LoRA name → file, the lookup the engine is given."""
        return {"tinykohya": self.lora_kohya, "tinypeft": self.lora_peft}

    @property
    def embeddings(self) -> dict[str, Path]:
        """Embedding name → file."""
        return {"tinyemb": self.embedding}

    @property
    def vaes(self) -> dict[str, Path]:
        """VAE name → folder."""
        return {"tinyvae": self.vae_dir}


def write_tiny_upscaler(
    path: Path, family: Literal["esrgan", "srvgg"], *, scale: int = 4, layout: str = "new", seed: int = 0
) -> Path:
    """Write a tiny random upscaler of ``family`` (features 8; one RRDB block of growth 4, or two Compact
    convolutions) to ``path``, in ESRGAN's ``old`` or BasicSR's ``new`` key layout. Its weights are small so
    that a Compact net stays close to its nearest-neighbour skip and an ESRGAN's output is not flat."""
    from sdfleet.engine.upscale.detect import NetInfo
    from sdfleet.engine.upscale.nets import build_net

    info = NetInfo(family=family, scale=scale, features=8, growth=4, blocks=1, convs=2)
    torch.manual_seed(seed)
    net = build_net(info)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if family == "srvgg":
        last = f"body.{2 * info.convs + 2}."
        state = {k: v * 0.1 if k.startswith(last) else v for k, v in state.items()}
    else:
        state["conv_last.bias"] = torch.full_like(state["conv_last.bias"], 0.5)
    if family == "esrgan" and layout == "old":
        state = _esrgan_old_keys(state, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def _esrgan_old_keys(state: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """BasicSR's RRDBNet keys as ESRGAN's original ones (the layout of 4x-UltraSharp and most community files)."""
    ups = scale.bit_length() - 1
    tops = {"conv_first": 0}
    for n in range(1, ups + 1):
        tops[f"conv_up{n}"] = 3 * n
    tops["conv_hr"] = 3 * ups + 2
    tops["conv_last"] = 3 * ups + 4
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, kind = key.rpartition(".")
        if head.startswith("body."):
            _, block, rdb, conv = head.split(".")
            out[f"model.1.sub.{block}.RDB{rdb[3:]}.conv{conv[4:]}.0.{kind}"] = value
        elif head == "conv_body":
            out[f"model.1.sub.{blocks}.{kind}"] = value
        else:
            out[f"model.{tops[head]}.{kind}"] = value
    return out


def write_tiny_controlnet(
    path: Path, unet: Any, *, layout: Literal["diffusers", "ldm"] = "diffusers", seed: int = 0
) -> Path:
    """Write a tiny random ControlNet for ``unet`` (its encoder half, as ``ControlNetModel.from_unet`` makes
    it; a hint encoder of 8 and 16 channels that halves the control image once, as the tiny VAE halves the
    picture: like the real ones, it takes the control image at the picture's size) to ``path`` as one ``.safetensors`` in the
    ``diffusers`` or original (``ldm``) key layout, its config in the metadata. The zero convolutions are
    perturbed — the residual outputs and the hint encoder's last one: a fresh net's are exactly zero, so its
    residuals, or the control image's part in them, would be too and prove nothing."""
    from sdfleet.engine.controlnet.detect import CONFIG_METADATA_KEY as NET_CONFIG_KEY
    from sdfleet.engine.sd.convert import controlnet_ldm_state

    torch.manual_seed(seed)
    net = _diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    for key in state:
        if key.startswith(
            ("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")
        ):
            state[key] = torch.randn_like(state[key]) * 0.05
    config = {k: v for k, v in dict(net.config).items() if not k.startswith("_")}
    if layout == "ldm":
        state = controlnet_ldm_state(state, int(config["layers_per_block"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", NET_CONFIG_KEY: json.dumps(config, default=list)})
    return path


def build_tiny_models(root: Path, seed: int = 0) -> TinyModels:
    """Build and save under ``root``: the tiny SD 1.x and SDXL models (folders and single files), a tiny
    SD 1.x inpainting model and a tiny SDXL refiner (single files), two LoRAs, an embedding and a second
    VAE (folder), and a tiny ESRGAN and Compact upscaler."""
    root.mkdir(parents=True, exist_ok=True)
    sd1 = build_tiny_sd1(root / "_work_sd1", seed)
    sdxl = build_tiny_sdxl(root / "_work_sdxl", seed + 1)
    sd1.save_pretrained(str(root / "tiny-sd1"), safe_serialization=True)
    sdxl.save_pretrained(str(root / "tiny-sdxl"), safe_serialization=True)
    write_single_file(sd1, root / "tiny-sd1.safetensors")
    write_single_file(sdxl, root / "tiny-sdxl.safetensors")
    lora_dir = root / "loras"
    write_lora(sd1, lora_dir / "tinykohya.safetensors", fmt="kohya", seed=seed + 10)
    write_lora(sd1, lora_dir / "tinypeft.safetensors", fmt="peft", seed=seed + 11)
    write_embedding(root / "embeddings" / "tinyemb.safetensors", dim=int(sd1.text_encoder.config.hidden_size))
    inpaint = build_tiny_sd1(root / "_work_sd1", seed + 2, in_channels=9)
    write_single_file(inpaint, root / "tiny-sd1-inpainting.safetensors")
    inpaint.vae.save_pretrained(str(root / "vae" / "tinyvae"), safe_serialization=True)
    write_single_file(
        build_tiny_refiner(root / "_work_sdxl", seed + 3), root / "tiny-sdxl-refiner.safetensors"
    )
    rrdb = write_tiny_upscaler(root / "upscalers" / "tiny-rrdb-x4.safetensors", "esrgan", seed=seed + 20)
    srvgg = write_tiny_upscaler(root / "upscalers" / "tiny-srvgg-x4.safetensors", "srvgg", seed=seed + 21)
    controlnet_sd1 = write_tiny_controlnet(
        root / "controlnet" / "tiny-controlnet-sd1.safetensors", sd1.unet, layout="ldm", seed=seed + 30
    )
    controlnet_sdxl = write_tiny_controlnet(
        root / "controlnet" / "tiny-controlnet-sdxl.safetensors", sdxl.unet, seed=seed + 31
    )
    ipadapter = root / "ipadapter"
    ip_sd1 = write_tiny_ip_adapter(
        ipadapter / "tiny-ip-adapter_sd15.safetensors", sd1.unet, "sd1", seed=seed + 40
    )
    ip_plus = write_tiny_ip_adapter(
        ipadapter / "tiny-ip-adapter-plus_sd15.safetensors", sd1.unet, "sd1", variant="plus", seed=seed + 41
    )
    ip_sdxl = write_tiny_ip_adapter(
        ipadapter / "tiny-ip-adapter_sdxl.safetensors", sdxl.unet, "sdxl", seed=seed + 42
    )
    encoder = write_tiny_image_encoder(
        root / "image_encoder" / "tiny-clip-vision.safetensors", seed=seed + 43
    )
    return TinyModels(
        root=root,
        sd1_dir=root / "tiny-sd1",
        sd1_file=root / "tiny-sd1.safetensors",
        sdxl_dir=root / "tiny-sdxl",
        sdxl_file=root / "tiny-sdxl.safetensors",
        lora_kohya=lora_dir / "tinykohya.safetensors",
        lora_peft=lora_dir / "tinypeft.safetensors",
        embedding=root / "embeddings" / "tinyemb.safetensors",
        sd1_inpaint_file=root / "tiny-sd1-inpainting.safetensors",
        vae_dir=root / "vae" / "tinyvae",
        refiner_file=root / "tiny-sdxl-refiner.safetensors",
        rrdb_file=rrdb,
        srvgg_file=srvgg,
        controlnet_sd1_file=controlnet_sd1,
        controlnet_sdxl_file=controlnet_sdxl,
        ip_adapter_sd1_file=ip_sd1,
        ip_adapter_plus_sd1_file=ip_plus,
        ip_adapter_sdxl_file=ip_sdxl,
        image_encoder_file=encoder,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m sdfleet.testing.tiny_models DIR``: build the tiny models into DIR and print their paths
    (for demos: ``sdfleet up --model DIR/tiny-sd1.safetensors``)."""
    import argparse

    parser = argparse.ArgumentParser(description="Build tiny random Stable Diffusion models offline.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = build_tiny_models(args.directory, args.seed)
    for name in (
        "sd1_file",
        "sd1_dir",
        "sdxl_file",
        "sdxl_dir",
        "refiner_file",
        "sd1_inpaint_file",
        "rrdb_file",
        "srvgg_file",
        "controlnet_sd1_file",
        "controlnet_sdxl_file",
        "ip_adapter_sd1_file",
        "ip_adapter_plus_sd1_file",
        "ip_adapter_sdxl_file",
        "image_encoder_file",
    ):
        print(f"{name:24} {getattr(models, name)}")
    for kind, table in (("lora", models.loras), ("embedding", models.embeddings), ("vae", models.vaes)):
        for key, path in table.items():
            print(f"{kind + ' ' + key:24} {path}")


if __name__ == "__main__":
    main()
