"""Tiny random Stable Diffusion models built offline, for tests, benchmarks and demos.

Nothing here downloads anything. :func:`build_tiny_models` makes, under one folder:

- a tiny SD 1.x pipeline (about 3 M parameters) and a tiny SDXL pipeline (about 6.5 M), each saved as a
  diffusers folder **and** as a single-file ``.safetensors`` checkpoint in the original (LDM/SGM) key
  layout users download (the diffusers→single-file converter is :func:`write_single_file`);
- LoRA files for the SD 1.x model in the kohya format (``lora_unet_…``/``lora_te_…``, ``alpha``) and in
  the diffusers/peft format (``unet.….lora_A.weight``), random but strong enough to change the image;
- a textual-inversion embedding in A1111's ``emb_params`` format.

The tokenizer is the real CLIP BPE tokenizer (see :mod:`sdfleet.engine.sd.tokenizer`). Single files we
write carry their components' diffusers configs in the safetensors metadata (key
``sdfleet.diffusers_config``), which the engine prefers to its shipped configs, because tiny shapes cannot
be inferred from the keys.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from sdfleet.engine.sd.checkpoints import CONFIG_METADATA_KEY
from sdfleet.engine.sd.tokenizer import write_tokenizer

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


# ------------------------------------------------------------------------------------------ single file


def _unet_to_ldm(key: str, unet_config: dict[str, Any]) -> str:
    """Map one diffusers UNet key to its LDM/SGM name (without the ``model.diffusion_model.`` prefix)."""
    per = int(unet_config["layers_per_block"]) + 1
    simple = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    for old, new in simple.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    resnet = (
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"),
        ("conv_shortcut", "skip_connection"),
    )

    def resnet_part(rest: str) -> str:
        for old, new in resnet:
            if rest.startswith(old + "."):
                return new + rest[len(old) :]
        return rest

    has_attention = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    patterns: list[tuple[str, Any]] = [
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda b, j, r: f"input_blocks.{b * per + j + 1}.0.{resnet_part(r)}",
        ),
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda b, j, r: f"input_blocks.{b * per + j + 1}.1.{r}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
            lambda b, r: f"input_blocks.{(b + 1) * per}.0.op.{r}",
        ),
        (r"mid_block\.resnets\.(\d+)\.(.*)", lambda j, r: f"middle_block.{2 * j}.{resnet_part(r)}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda r: f"middle_block.1.{r}"),
        (
            r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
            lambda b, j, r: f"output_blocks.{b * per + j}.0.{resnet_part(r)}",
        ),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", lambda b, j, r: f"output_blocks.{b * per + j}.1.{r}"),
        (
            r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
            lambda b, r: f"output_blocks.{b * per + per - 1}.{2 if has_attention[b] else 1}.conv.{r}",
        ),
    ]
    for pattern, build in patterns:
        match = re.fullmatch(pattern, key)
        if match:
            groups = [int(g) if g.isdigit() else g for g in match.groups()]
            return str(build(*groups))
    raise ValueError(f"no LDM name for UNet key {key!r}")


def _vae_to_ldm(key: str, n_blocks: int) -> tuple[str, bool]:
    """Map a diffusers VAE key to its LDM name; the flag says a mid-attention weight needs ``[o, i, 1, 1]``."""
    key = key.replace("conv_norm_out", "norm_out")
    match = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+)(?:\.0)?\.(weight|bias)", key)
    if match:
        part, name, kind = match.groups()
        name = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[name]
        return f"{part}.mid.attn_1.{name}.{kind}", kind == "weight" and name != "norm"
    key = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m.group(1)) + 1}", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", key)
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.resnets",
        lambda m: f"decoder.up.{n_blocks - 1 - int(m.group(1))}.block",
        key,
    )
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
        lambda m: f"decoder.up.{n_blocks - 1 - int(m.group(1))}.upsample",
        key,
    )
    return key.replace("conv_shortcut", "nin_shortcut"), False


def _clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """An OpenAI-CLIP (HF layout) encoder under ``prefix`` + ``text_model.`` (transformers 5 drops it)."""
    out = {}
    for key, value in state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = value
    return out


def _open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """An HF ``CLIPTextModelWithProjection`` in OpenCLIP layout (fused q/k/v, transposed projection)."""
    out: dict[str, torch.Tensor] = {}
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out[prefix + "positional_embedding"] = state.pop("embeddings.position_embedding.weight")
    out[prefix + "token_embedding.weight"] = state.pop("embeddings.token_embedding.weight")
    out[prefix + "ln_final.weight"] = state.pop("final_layer_norm.weight")
    out[prefix + "ln_final.bias"] = state.pop("final_layer_norm.bias")
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state.pop(src + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
            out[dst + f"attn.out_proj.{kind}"] = state.pop(src + f"self_attn.out_proj.{kind}")
            out[dst + f"ln_1.{kind}"] = state.pop(src + f"layer_norm1.{kind}")
            out[dst + f"ln_2.{kind}"] = state.pop(src + f"layer_norm2.{kind}")
            out[dst + f"mlp.c_fc.{kind}"] = state.pop(src + f"mlp.fc1.{kind}")
            out[dst + f"mlp.c_proj.{kind}"] = state.pop(src + f"mlp.fc2.{kind}")
    leftover = [k for k in state if "position_ids" not in k]
    if leftover:
        raise ValueError(f"unconverted OpenCLIP keys: {leftover[:5]}")
    return out


def pipeline_configs(pipe: Any) -> dict[str, Any]:
    """``{"model_index": …, component: config}`` of a pipeline (JSON-serialisable)."""
    configs: dict[str, Any] = {"model_index": {"_class_name": type(pipe).__name__}}
    for name in ("unet", "vae", "scheduler"):
        configs[name] = dict(getattr(pipe, name).config)
    for name in ("text_encoder", "text_encoder_2"):
        model = getattr(pipe, name, None)
        if model is not None:
            configs[name] = {"_class_name": type(model).__name__, **model.config.to_dict()}
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None:
            configs[name] = {"pad_token": str(tok.pad_token)}
    result: dict[str, Any] = json.loads(json.dumps(configs, default=list))
    return result


def single_file_state(pipe: Any) -> dict[str, torch.Tensor]:
    """The pipeline's weights in the original single-file layout (SD 1.x, SD 2.x, SDXL base or refiner)."""
    out: dict[str, torch.Tensor] = {}
    unet_config = dict(pipe.unet.config)
    for key, value in pipe.unet.state_dict().items():
        out["model.diffusion_model." + _unet_to_ldm(key, unet_config)] = value
    n_blocks = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        name, to_conv = _vae_to_ldm(key, n_blocks)
        out["first_stage_model." + name] = value[:, :, None, None] if to_conv else value
    if getattr(pipe, "text_encoder", None) is None:  # SDXL refiner: OpenCLIP bigG only
        out.update(_open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.0.model."))
        return {k: v.detach().contiguous() for k, v in out.items()}
    te_state = {k: v for k, v in pipe.text_encoder.state_dict().items() if "position_ids" not in k}
    if getattr(pipe, "text_encoder_2", None) is None and pipe.text_encoder.config.hidden_act == "gelu":
        out.update(_open_clip_to_ldm(te_state, "cond_stage_model.model."))  # SD 2.x: OpenCLIP ViT-H
    elif getattr(pipe, "text_encoder_2", None) is None:
        out.update(_clip_to_ldm(te_state, "cond_stage_model.transformer."))
    else:
        out.update(_clip_to_ldm(te_state, "conditioner.embedders.0.transformer."))
        out.update(_open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    return {k: v.detach().contiguous() for k, v in out.items()}


def write_single_file(pipe: Any, path: Path, *, embed_config: bool = True) -> Path:
    """Write ``pipe`` as one ``.safetensors`` checkpoint in the layout A1111 users download.

    With ``embed_config`` the components' diffusers configs go into the file's metadata, so the engine can
    rebuild models whose shapes no shipped config describes (tiny test models).
    """
    metadata = {"format": "pt"}
    if embed_config:
        metadata[CONFIG_METADATA_KEY] = json.dumps(pipeline_configs(pipe))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(single_file_state(pipe), str(path), metadata=metadata)
    return path


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


def build_tiny_models(root: Path, seed: int = 0) -> TinyModels:
    """Build and save under ``root``: the tiny SD 1.x and SDXL models (folders and single files), a tiny
    SD 1.x inpainting model and a tiny SDXL refiner (single files), two LoRAs, an embedding and a second
    VAE (folder)."""
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
    for name in ("sd1_file", "sd1_dir", "sdxl_file", "sdxl_dir", "refiner_file", "sd1_inpaint_file"):
        print(f"{name:18} {getattr(models, name)}")
    for kind, table in (("lora", models.loras), ("embedding", models.embeddings), ("vae", models.vaes)):
        for key, path in table.items():
            print(f"{kind + ' ' + key:18} {path}")


if __name__ == "__main__":
    main()
