"""diffusers → single file: write a pipeline as one ``.safetensors`` checkpoint in the original (LDM/SGM)
key layout that A1111 users download, optionally with its components' diffusers configs in the metadata
(key ``sdfleet.diffusers_config``, which :mod:`sdfleet.engine.sd.checkpoints` reads back) — needed for
models whose shapes no shipped config describes (the tiny test models, the demo model)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sdfleet.engine.sd.checkpoints import CONFIG_METADATA_KEY

__all__ = [
    "controlnet_hint_blocks",
    "controlnet_ldm_name",
    "controlnet_ldm_state",
    "pipeline_configs",
    "single_file_state",
    "write_single_file",
]


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
        # without diffusers' ``_use_default_values``: on load it would reset every key it lists, including
        # ones set after construction (``register_to_config``), such as a trained VAE's scaling_factor
        config = dict(getattr(pipe, name).config)
        config.pop("_use_default_values", None)
        configs[name] = config
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


_UNION_PARTS = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")


def controlnet_ldm_name(key: str, layers_per_block: int, hint_blocks: int) -> str:
    """The original-layout name of one diffusers ControlNet key (no prefix): the UNet-encoder half named
    as the UNet's, the hint encoder's convolutions at the even indices of ``input_hint_block`` (SiLUs between
    them; ``hint_blocks`` convolutions between its first and last), the zero convolutions in order. ControlNet
    Union's own parts (its task embeddings, condition transformer and projections) keep their names."""
    if key.startswith(_UNION_PARTS):
        return key
    if key.startswith("controlnet_cond_embedding."):
        part, _, tail = key[len("controlnet_cond_embedding.") :].partition(".")
        if part == "conv_in":
            return f"input_hint_block.0.{tail}"
        if part == "conv_out":
            return f"input_hint_block.{2 * (hint_blocks + 1)}.{tail}"
        index, _, tail = tail.partition(".")  # blocks.N.weight
        return f"input_hint_block.{2 * (int(index) + 1)}.{tail}"
    if key.startswith("controlnet_down_blocks."):
        index, _, tail = key[len("controlnet_down_blocks.") :].partition(".")
        return f"zero_convs.{index}.0.{tail}"
    if key.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + key[len("controlnet_mid_block.") :]
    return _unet_to_ldm(key, {"layers_per_block": layers_per_block, "up_block_types": []})


def controlnet_hint_blocks(keys: Iterable[str]) -> int:
    """How many convolutions a diffusers ControlNet's hint encoder has between its first and last."""
    return sum(1 for k in keys if re.fullmatch(r"controlnet_cond_embedding\.blocks\.\d+\.weight", k))


def controlnet_ldm_state(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet's weights in the original layout (:func:`controlnet_ldm_name`)."""
    hint = controlnet_hint_blocks(state)
    return {controlnet_ldm_name(k, layers_per_block, hint): v.detach().contiguous() for k, v in state.items()}
