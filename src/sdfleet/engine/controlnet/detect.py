"""What a ControlNet file is, read from its tensor names and shapes alone (no torch, no tensor loaded): the
SD family it steers, its variant, its key layout, and the diffusers config that builds it.

Files come in two layouts:

* ``ldm`` — the original one (lllyasviel's ``control_v11p_sd15_canny.pth`` converted to safetensors, most
  SD 1.x/2.x community nets): ``input_blocks.N…``, ``input_hint_block.N``, ``zero_convs.N.0``,
  ``middle_block_out.0``, sometimes under ``control_model.``;
* ``diffusers`` — ``diffusion_pytorch_model.safetensors`` of a diffusers folder, which is how SDXL nets
  (``controlnet-canny-sdxl-1.0`` and its ``-mid``/``-small``), ControlNet Union (``controlnet-union-sdxl-1.0``,
  ControlNet++) and many SD 1.5 nets are published: ``down_blocks.N…``, ``controlnet_cond_embedding``,
  ``controlnet_down_blocks.N``.

The config is built from the tensors (channels per level, blocks per level, transformer depth per level,
conditioning channels, the hint encoder's channels, linear or convolutional projections, SDXL's added
embedding), on top of the family's defaults for what shapes cannot tell (head counts, SDXL's time-embedding
size) — so the real SD1/SD2/SDXL nets, the smaller SDXL variants and any community variant load offline with
no config file to download. A file written by sdfleet's tools carries its own config in its metadata, which
wins (the tiny test nets, whose head counts are not the family's).

``arch`` is what the net can steer: ``sd1``, ``sd2`` or ``sdxl`` — by cross-attention width (768, 1024,
2048), else by SDXL's added embedding and SD 2.x's linear projections."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.engine.sd.checkpoints import embedded_configs
from sdfleet.errors import ValidationError

__all__ = [
    "CONFIG_METADATA_KEY",
    "DIFFUSERS",
    "LDM",
    "UNION",
    "ControlNetInfo",
    "detect_controlnet",
    "fits_checkpoint",
]

SD1, SD2, SDXL = "sd1", "sd2", "sdxl"
LDM, DIFFUSERS = "ldm", "diffusers"
FULL, UNION = "full", "union"
CONFIG_METADATA_KEY = "sdfleet.controlnet_config"
"""The safetensors metadata key of a ControlNet's own diffusers config (written by sdfleet's tools)."""

_CROSS_WIDTH = {768: SD1, 1024: SD2, 2048: SDXL}
_SDXL_TIME_EMBED = 256  # SDXL's addition_time_embed_dim: 2816 = 1280 (pooled text) + 6 × 256
_LDM_PREFIXES = ("control_model.", "model.control_model.")


@dataclass(frozen=True, slots=True)
class ControlNetInfo:
    """A ControlNet file: the family it steers (``arch``), ``variant`` (``full``, or ``union`` for SDXL
    ControlNet Union), key ``layout`` (``ldm``/``diffusers``), its diffusers ``config`` (for
    ``ControlNetModel`` or ``ControlNetUnionModel``), and the ``prefix`` its LDM keys carry."""

    arch: str
    variant: str
    layout: str
    config: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""

    @property
    def size(self) -> str:
        """SDXL's published sizes by transformer depth: ``full`` (10 in the deepest level), ``mid``, ``small``
        (none); other families ``full``."""
        depths = self.config.get("transformer_layers_per_block")
        if self.arch != SDXL or not isinstance(depths, list) or not depths:
            return FULL
        deepest = max(depths)
        return FULL if deepest >= 10 else ("mid" if deepest > 0 else "small")


@dataclass(slots=True)
class _Level:
    channels: int
    resnets: int = 0
    depth: int | None = None  # transformer blocks per attention; None: no attention at this level
    linear: bool = False


def _unprefixed(shapes: Mapping[str, Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], str]:
    for prefix in _LDM_PREFIXES:
        if any(k.startswith(prefix) for k in shapes):
            return {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}, prefix
    return {k: tuple(v) for k, v in shapes.items()}, ""


def _count(keys: Sequence[str], pattern: str) -> int:
    """How many distinct indices ``(\\d+)`` the pattern finds."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _levels_ldm(s: Mapping[str, tuple[int, ...]]) -> tuple[list[_Level], int | None]:
    keys = list(s)
    levels: list[_Level] = []
    current: _Level | None = None
    n = 1
    while any(k.startswith(f"input_blocks.{n}.") for k in keys):
        if f"input_blocks.{n}.0.op.weight" in s:  # a downsample: the level ends
            if current is not None:
                levels.append(current)
            current = None
        else:
            out = s[f"input_blocks.{n}.0.in_layers.2.weight"][0]
            if current is None:
                current = _Level(out)
            current.resnets += 1
            if any(k.startswith(f"input_blocks.{n}.1.") for k in keys):
                current.depth = _count(keys, rf"^input_blocks\.{n}\.1\.transformer_blocks\.(\d+)\.")
                current.linear = len(s.get(f"input_blocks.{n}.1.proj_in.weight", (0, 0, 1, 1))) == 2
        n += 1
    if current is not None:
        levels.append(current)
    mid = _count(keys, r"^middle_block\.1\.transformer_blocks\.(\d+)\.")
    return levels, (mid if any(k.startswith("middle_block.1.") for k in keys) else None)


def _levels_diffusers(s: Mapping[str, tuple[int, ...]]) -> tuple[list[_Level], int | None]:
    keys = list(s)
    levels: list[_Level] = []
    i = 0
    while f"down_blocks.{i}.resnets.0.conv1.weight" in s:
        level = _Level(s[f"down_blocks.{i}.resnets.0.conv1.weight"][0])
        level.resnets = _count(keys, rf"^down_blocks\.{i}\.resnets\.(\d+)\.")
        if any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys):
            level.depth = _count(keys, rf"^down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
            level.linear = len(s.get(f"down_blocks.{i}.attentions.0.proj_in.weight", (0, 0, 1, 1))) == 2
        levels.append(level)
        i += 1
    mid = _count(keys, r"^mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    return levels, (mid if any(k.startswith("mid_block.attentions.") for k in keys) else None)


def _hint_channels(s: Mapping[str, tuple[int, ...]], layout: str) -> tuple[int, list[int]]:
    """(conditioning channels, the hint encoder's ``conditioning_embedding_out_channels``)."""
    shapes: list[tuple[int, ...]]
    if layout == LDM:
        convs = sorted(
            int(m.group(1))
            for k, shape in s.items()
            if (m := re.match(r"^input_hint_block\.(\d+)\.weight$", k)) and len(shape) == 4
        )
        # the last one maps to the first level's channels
        shapes = [s[f"input_hint_block.{i}.weight"] for i in convs][:-1]
    else:
        blocks = sorted(
            (int(m.group(1)), shape)
            for k, shape in s.items()
            if (m := re.match(r"^controlnet_cond_embedding\.blocks\.(\d+)\.weight$", k))
        )
        shapes = [s["controlnet_cond_embedding.conv_in.weight"], *(shape for _, shape in blocks)]
    if not shapes:
        raise ValidationError("not a ControlNet: it has no hint encoder", field="model")
    out = [shapes[0][0], *(shape[0] for shape in shapes[2::2])]
    return shapes[0][1], out


def _arch(cross: int, sdxl_embedding: bool, linear: bool) -> str:
    if cross in _CROSS_WIDTH:
        return _CROSS_WIDTH[cross]
    if sdxl_embedding:
        return SDXL
    return SD2 if linear else SD1


def detect_controlnet(
    shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None
) -> ControlNetInfo:
    """Tell a ControlNet's family, variant, layout and config from its tensors (and sdfleet's metadata)."""
    s, prefix = _unprefixed(shapes)
    if "input_hint_block.0.weight" in s:
        layout = LDM
        levels, mid = _levels_ldm(s)
        conv_in = s.get("input_blocks.0.0.weight")
        added = s.get("label_emb.0.0.weight")
    elif "controlnet_cond_embedding.conv_in.weight" in s:
        layout = DIFFUSERS
        levels, mid = _levels_diffusers(s)
        conv_in = s.get("conv_in.weight")
        added = s.get("add_embedding.linear_1.weight")
    else:
        kind = (
            "an SD checkpoint (a UNet with its text encoder), not a ControlNet"
            if any(k.startswith("model.diffusion_model.") for k in shapes)
            else "not a ControlNet: no hint encoder (input_hint_block / controlnet_cond_embedding)"
        )
        raise ValidationError(kind, field="model")
    if conv_in is None or not levels:
        raise ValidationError("not a ControlNet: no input convolution or down blocks", field="model")
    cross = next((shape[1] for k, shape in s.items() if k.endswith("attn2.to_k.weight")), 0)
    linear = any(level.linear for level in levels)
    arch = _arch(cross, added is not None, linear)
    union = "task_embedding" in s or "control_add_embedding.linear_1.weight" in s
    conditioning_channels, hint = _hint_channels(s, layout)
    config = _config(arch, levels, mid, conv_in, cross, linear, added, conditioning_channels, hint)
    if union:
        config.update(_union_config(s))
    embedded = _embedded(metadata or {})
    if embedded:
        config.update(embedded)
    return ControlNetInfo(arch, UNION if union else FULL, layout, config, prefix)


def _config(
    arch: str,
    levels: list[_Level],
    mid: int | None,
    conv_in: Sequence[int],
    cross: int,
    linear: bool,
    added: Sequence[int] | None,
    conditioning_channels: int,
    hint: list[int],
) -> dict[str, Any]:
    channels = [level.channels for level in levels]
    config: dict[str, Any] = {
        "in_channels": int(conv_in[1]),
        "conditioning_channels": int(conditioning_channels),
        "block_out_channels": channels,
        "layers_per_block": levels[0].resnets,
        "down_block_types": [
            "CrossAttnDownBlock2D" if level.depth is not None else "DownBlock2D" for level in levels
        ],
        # a level without attention takes the middle block's depth: diffusers builds the middle block with
        # the last level's (SD 1.x's last level has none)
        "transformer_layers_per_block": [
            level.depth if level.depth is not None else (mid if mid is not None else 1) for level in levels
        ],
        "cross_attention_dim": int(cross) or {SD1: 768, SD2: 1024, SDXL: 2048}[arch],
        "use_linear_projection": linear,
        "conditioning_embedding_out_channels": [int(c) for c in hint],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid is not None else "UNetMidBlock2D",
    }
    if arch == SD1:
        config["attention_head_dim"] = 8
    else:  # heads of 64 channels (SD 2.x, SDXL)
        config["attention_head_dim"] = [max(1, c // 64) for c in channels]
    if added is not None:
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=_SDXL_TIME_EMBED,
            projection_class_embeddings_input_dim=int(added[1]),
        )
    return config


def _union_config(s: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    task = s.get("task_embedding", (6, 320))
    keys = list(s)
    return {
        "num_control_type": int(task[0]),
        "num_trans_channel": int(task[1]),
        "num_trans_layer": _count(keys, r"^transformer_layes\.(\d+)\."),
        "num_proj_channel": int(s.get("spatial_ch_projs.weight", (task[1],))[0]),
    }


def _embedded(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    value = embedded_configs(metadata, CONFIG_METADATA_KEY)
    return {k: v for k, v in value.items() if not k.startswith("_")} if value else None


def fits_checkpoint(net_arch: str | None, checkpoint_arch: str | None) -> bool:
    """Whether a ControlNet of ``net_arch`` can steer a checkpoint of ``checkpoint_arch`` (unknown: yes; the
    SDXL refiner takes none)."""
    if net_arch is None or checkpoint_arch is None:
        return True
    return net_arch == checkpoint_arch
