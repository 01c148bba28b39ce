"""What an IP-Adapter file or an image encoder file is, read from tensor names and shapes alone (no torch, no
tensor loaded), so registration and submit-time checks need neither.

IP-Adapters come as one file of two parts, as people download them (``ip-adapter_sd15.safetensors``,
``ip-adapter_sdxl.safetensors``, ``ip-adapter-plus_sd15.safetensors``, ``ip-adapter-plus_sdxl_vit-h…``):
``image_proj.*`` (what turns the image embedding into tokens) and ``ip_adapter.N.to_k_ip`` / ``to_v_ip``
(the extra key/value projections of every cross-attention layer ``N``, numbered as the UNet's attention
processors: odd numbers, the cross-attentions). The variant is the projection's: ``plain`` (``proj`` +
``norm``: 4 tokens from the projected ``image_embeds``), ``plus`` (a Resampler: ``latents``, ``proj_in``,
``layers.*``, fed the encoder's penultimate hidden states) or ``full`` (Full-face: an MLP over the hidden
states, ``proj.0`` … ``proj.3``). The SD family is the cross-attention width the keys/values read (768, 1024,
2048). FaceID adapters (InsightFace embeddings and a LoRA) are refused.

Image encoders are transformers' ``CLIPVisionModelWithProjection`` in one ``.safetensors``
(``vision_model.*`` and ``visual_projection.weight``, as h94/IP-Adapter's ``image_encoder/model.safetensors``
and ComfyUI's ``clip_vision`` files): the config is rebuilt from the shapes (widths, depth, patch and image
size) and the known families' head counts; a file written by sdfleet's tools carries its config in its
metadata, which wins."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.errors import ValidationError
from sdfleet.specs.ipadapter import ENCODER_FAMILIES, adapter_arch, adapter_need, encoder_family

__all__ = [
    "ADAPTER_METADATA_KEY",
    "ENCODER_METADATA_KEY",
    "FULL",
    "PLAIN",
    "PLUS",
    "IPAdapterInfo",
    "ImageEncoderInfo",
    "detect_image_encoder",
    "detect_ip_adapter",
    "read_image_encoder",
    "read_ip_adapter",
]

PLAIN, PLUS, FULL = "plain", "plus", "full"
ADAPTER_METADATA_KEY = "sdfleet.ip_adapter"
"""Safetensors metadata of an IP-Adapter written by sdfleet's tools: ``{"arch": "sd1"}`` (tiny widths are no
SD family's)."""
ENCODER_METADATA_KEY = "sdfleet.image_encoder_config"
"""Safetensors metadata of an image encoder written by sdfleet's tools: its ``CLIPVisionConfig`` fields."""

_CROSS_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_PROJ, _ATTN = "image_proj.", "ip_adapter."
_VISION = "vision_model."


@dataclass(frozen=True, slots=True)
class IPAdapterInfo:
    """An IP-Adapter file: the SD ``arch`` it steers, its ``variant`` (plain/plus/full), the cross-attention
    width, the encoder width it reads (projection for plain, hidden size otherwise), its token count and
    the number of cross-attention layers it patches."""

    arch: str
    variant: str
    cross_attention_dim: int
    image_width: int
    tokens: int
    layers: int

    @property
    def reads_hidden(self) -> bool:
        """Whether it reads the encoder's penultimate hidden states (Plus, Full-face), not ``image_embeds``."""
        return self.variant != PLAIN

    @property
    def need(self) -> str:
        """The image encoder it needs (``vit-h``, ``vit-bigg``, or ``p<width>``/``h<width>``)."""
        return adapter_need(self.reads_hidden, self.image_width)

    @property
    def registry_arch(self) -> str:
        """What the registry records: the SD family and the encoder need (``sd1-vit-h``)."""
        return adapter_arch(self.arch, self.need)


@dataclass(frozen=True, slots=True)
class ImageEncoderInfo:
    """A CLIP vision encoder file: its family (``vit-h``…) and the ``CLIPVisionConfig`` fields that build it."""

    family: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def projection_dim(self) -> int:
        return int(self.config["projection_dim"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])


def _meta(metadata: Mapping[str, str] | None, key: str, field_name: str) -> dict[str, Any]:
    raw = (metadata or {}).get(key)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"its {key} metadata is not JSON", field=field_name) from exc
    return value if isinstance(value, dict) else {}


def detect_ip_adapter(
    shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None, field: str = "model"
) -> IPAdapterInfo:
    """Tell an IP-Adapter's family, variant and widths from its tensors (422 naming ``field`` when the file
    is none, or is a FaceID adapter)."""
    proj = {k[len(_PROJ) :]: tuple(v) for k, v in shapes.items() if k.startswith(_PROJ)}
    attn = {k[len(_ATTN) :]: tuple(v) for k, v in shapes.items() if k.startswith(_ATTN)}
    if not proj or not attn:
        what = (
            "a ControlNet"
            if any(k.startswith(("input_hint_block.", "controlnet_cond_embedding.")) for k in shapes)
            else "no IP-Adapter"
        )
        raise ValidationError(f"{what}: an IP-Adapter has image_proj.* and ip_adapter.* tensors", field=field)
    if (
        any("lora" in k for k in attn)
        or "perceiver_resampler.proj_in.weight" in proj
        or ("norm.weight" in proj and "proj.weight" not in proj and "proj.3.weight" not in proj)
    ):
        raise ValidationError(
            "a FaceID IP-Adapter: it reads InsightFace face embeddings, which this server does not make",
            field=field,
        )
    layers = sorted(int(m.group(1)) for k in attn if (m := re.match(r"^(\d+)\.to_k_ip\.weight$", k)))
    if not layers or any(f"{n}.to_v_ip.weight" not in attn for n in layers):
        raise ValidationError("an IP-Adapter without to_k_ip/to_v_ip pairs", field=field)
    cross = int(attn[f"{layers[0]}.to_k_ip.weight"][1])
    if "proj.weight" in proj:
        variant, width = PLAIN, int(proj["proj.weight"][1])
        tokens = int(proj["proj.weight"][0]) // cross
        if tokens * cross != proj["proj.weight"][0] or tokens != 4:
            raise ValidationError(
                f"a plain IP-Adapter of {proj['proj.weight'][0] / cross:g} tokens; they have 4", field=field
            )
    elif "proj.3.weight" in proj:
        variant, width, tokens = FULL, int(proj["proj.0.weight"][1]), 0
    elif "latents" in proj and "proj_in.weight" in proj:
        variant, width, tokens = PLUS, int(proj["proj_in.weight"][1]), int(proj["latents"][1])
        depth = len({m.group(1) for k in proj if (m := re.match(r"^layers\.(\d+)\.", k))})
        if depth != 4:
            raise ValidationError(f"a Plus IP-Adapter of {depth} resampler layers; they have 4", field=field)
    else:
        raise ValidationError("an IP-Adapter whose image projection is of no known kind", field=field)
    arch = _meta(metadata, ADAPTER_METADATA_KEY, field).get("arch") or _CROSS_WIDTH.get(cross)
    if arch not in ("sd1", "sd2", "sdxl"):
        raise ValidationError(
            f"an IP-Adapter for a cross-attention width of {cross}, which is no SD family's", field=field
        )
    return IPAdapterInfo(str(arch), variant, cross, width, tokens, len(layers))


def _count(keys: Sequence[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def detect_image_encoder(
    shapes: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None = None,
    field: str = "image_encoder",
) -> ImageEncoderInfo:
    """Tell a CLIP vision encoder's family and config from its tensors (and sdfleet's metadata)."""
    s = {k: tuple(v) for k, v in shapes.items()}
    patch = s.get(f"{_VISION}embeddings.patch_embedding.weight")
    positions = s.get(f"{_VISION}embeddings.position_embedding.weight")
    projection = s.get("visual_projection.weight")
    if patch is None or positions is None:
        raise ValidationError(
            "no CLIP vision encoder: it has no vision_model.embeddings (a transformers "
            "CLIPVisionModelWithProjection file)",
            field=field,
        )
    if projection is None:
        raise ValidationError(
            "a CLIP vision encoder without visual_projection: IP-Adapters read the projected embeddings",
            field=field,
        )
    hidden, channels, patch_size = int(patch[0]), int(patch[1]), int(patch[2])
    side = math.isqrt(int(positions[0]) - 1)
    layers = _count(list(s), rf"^{re.escape(_VISION)}encoder\.layers\.(\d+)\.")
    fc1 = s.get(f"{_VISION}encoder.layers.0.mlp.fc1.weight", (4 * hidden, hidden))
    family = encoder_family(int(projection[0]), hidden)
    known = family in ENCODER_FAMILIES
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": int(fc1[0]),
        "projection_dim": int(projection[0]),
        "num_hidden_layers": layers,
        "num_attention_heads": 16 if known else max(1, hidden // 64),
        "num_channels": channels,
        "image_size": side * patch_size,
        "patch_size": patch_size,
        # OpenAI's ViT-L/14 uses quick GELU; the OpenCLIP ViT-H and ViT-bigG, GELU
        "hidden_act": "quick_gelu" if family == "vit-l" else "gelu",
        "layer_norm_eps": 1e-5,
    }
    config.update(_meta(metadata, ENCODER_METADATA_KEY, field))
    if side * side + 1 != positions[0] or not layers:
        raise ValidationError("a CLIP vision encoder of a shape this server cannot rebuild", field=field)
    return ImageEncoderInfo(encoder_family(int(config["projection_dim"]), int(config["hidden_size"])), config)


def _header(path: Path, what: str, field: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    if path.suffix.lower() != ".safetensors":
        raise ValidationError(
            f"{path.name}: {what} load from .safetensors; convert it first: sdfleet models convert {path}",
            field=field,
        )
    try:
        header = read_header(path)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=field) from exc
    return dict(header.shapes), dict(header.metadata)


def read_ip_adapter(path: Path, field: str = "model") -> IPAdapterInfo:
    """What an IP-Adapter file is, from its header alone (422 naming ``field`` when it is not one)."""
    shapes, metadata = _header(path, "IP-Adapters", field)
    try:
        return detect_ip_adapter(shapes, metadata, field)
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc.message}", field=field) from exc


def read_image_encoder(path: Path, field: str = "image_encoder") -> ImageEncoderInfo:
    """What an image encoder file is, from its header alone (422 naming ``field`` when it is not one)."""
    shapes, metadata = _header(path, "image encoders", field)
    try:
        return detect_image_encoder(shapes, metadata, field)
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc.message}", field=field) from exc
