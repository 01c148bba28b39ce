"""Tiny IP-Adapters and a tiny CLIP vision encoder, in the single-file layouts people download, built offline
(re-exported by :mod:`sdfleet.testing.tiny_models`, which writes them with the other tiny models).

:func:`ip_adapter_state` writes an adapter's tensors in the original key layout (``image_proj.*``,
``ip_adapter.N.to_k_ip/to_v_ip``, ``N`` the UNet's cross-attention processors' odd numbers) for any UNet —
random ones for the tiny UNets, or empty ones on torch's ``meta`` device for the real SD 1.5 and SDXL UNets,
whose shapes the detection tests read. The key/value projections are random at full strength (a fresh
adapter's would not be zero, but a weak one would hardly change a tiny picture)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

__all__ = ["ip_adapter_state", "write_tiny_image_encoder", "write_tiny_ip_adapter"]

TINY_ENCODER: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "projection_dim": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_channels": 3,
    "image_size": 32,
    "patch_size": 8,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
"""The tiny encoder's ``CLIPVisionConfig``: family ``clip-24-32`` (projection 24, hidden size 32)."""

Variant = Literal["plain", "plus", "full"]


def ip_adapter_state(
    unet: Any,
    *,
    variant: Variant = "plain",
    image_width: int,
    tokens: int = 16,
    dim: int | None = None,
    heads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """An IP-Adapter's tensors for ``unet`` in the original layout. ``image_width``: the encoder width it
    reads (projection for ``plain``, hidden size for ``plus``/``full``); Plus: ``tokens`` queries, a Resampler
    of width ``dim`` (default: the cross-attention width) and ``heads`` heads of 64. On ``device="meta"``
    the tensors are empty (shapes only)."""
    cross = int(unet.config.cross_attention_dim)
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        if device == "meta":
            return torch.empty(shape, device="meta")
        fan_in = shape[-1] if len(shape) > 1 else 1
        out: torch.Tensor = torch.randn(shape, generator=generator) / fan_in**0.5
        return out

    def ones(n: int) -> torch.Tensor:
        return torch.empty((n,), device="meta") if device == "meta" else torch.ones(n)

    def zeros(n: int) -> torch.Tensor:
        return torch.empty((n,), device="meta") if device == "meta" else torch.zeros(n)

    state: dict[str, torch.Tensor] = {}
    if variant == "plain":
        state |= {
            "image_proj.proj.weight": rand(4 * cross, image_width),
            "image_proj.proj.bias": zeros(4 * cross),
            "image_proj.norm.weight": ones(cross),
            "image_proj.norm.bias": zeros(cross),
        }
    elif variant == "full":
        state |= {
            "image_proj.proj.0.weight": rand(image_width, image_width),
            "image_proj.proj.0.bias": zeros(image_width),
            "image_proj.proj.2.weight": rand(cross, image_width),
            "image_proj.proj.2.bias": zeros(cross),
            "image_proj.proj.3.weight": ones(cross),
            "image_proj.proj.3.bias": zeros(cross),
        }
    else:
        width = dim or cross
        inner = 64 * (heads or max(1, width // 64))
        state |= {
            "image_proj.latents": rand(1, tokens, width),
            "image_proj.proj_in.weight": rand(width, image_width),
            "image_proj.proj_in.bias": zeros(width),
            "image_proj.proj_out.weight": rand(cross, width),
            "image_proj.proj_out.bias": zeros(cross),
            "image_proj.norm_out.weight": ones(cross),
            "image_proj.norm_out.bias": zeros(cross),
        }
        for i in range(4):
            at = f"image_proj.layers.{i}"
            state |= {
                f"{at}.0.norm1.weight": ones(width),
                f"{at}.0.norm1.bias": zeros(width),
                f"{at}.0.norm2.weight": ones(width),
                f"{at}.0.norm2.bias": zeros(width),
                f"{at}.0.to_q.weight": rand(inner, width),
                f"{at}.0.to_kv.weight": rand(2 * inner, width),
                f"{at}.0.to_out.weight": rand(width, inner),
                f"{at}.1.0.weight": ones(width),
                f"{at}.1.0.bias": zeros(width),
                f"{at}.1.1.weight": rand(4 * width, width),
                f"{at}.1.3.weight": rand(width, 4 * width),
            }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = int(unet.get_submodule(name.removesuffix(".processor")).to_k.out_features)
        state[f"ip_adapter.{key}.to_k_ip.weight"] = rand(hidden, cross)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = rand(hidden, cross)
        key += 2
    return state


def write_tiny_ip_adapter(
    path: Path, unet: Any, arch: str, *, variant: Variant = "plain", seed: int = 0
) -> Path:
    """Write a tiny random IP-Adapter for ``unet`` (of SD family ``arch``, recorded in the metadata: tiny
    widths are no family's) that reads :data:`TINY_ENCODER`'s embeddings, to one ``.safetensors``."""
    from sdfleet.engine.controlnet.ipadapter_detect import ADAPTER_METADATA_KEY

    width = TINY_ENCODER["projection_dim"] if variant == "plain" else TINY_ENCODER["hidden_size"]
    state = ip_adapter_state(unet, variant=variant, image_width=width, tokens=4, heads=1, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", ADAPTER_METADATA_KEY: json.dumps({"arch": arch})}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def write_tiny_image_encoder(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``CLIPVisionModelWithProjection`` (:data:`TINY_ENCODER`) to one ``.safetensors``,
    its config in the metadata."""
    from sdfleet.engine.controlnet.ipadapter_detect import ENCODER_METADATA_KEY

    transformers: Any = importlib.import_module("transformers")
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**TINY_ENCODER))
    state = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", ENCODER_METADATA_KEY: json.dumps(TINY_ENCODER)}
    save_file(state, str(path), metadata=metadata)
    return path
