"""What a T2I-Adapter file is, from its tensor names and shapes alone (no torch): the SD family it steers, its
kind, its key layout and the config of diffusers' ``T2IAdapter`` that holds it.

Files come in two layouts:

* ``ldm`` — TencentARC's originals (``t2iadapter_canny_sd15v2``, ``t2iadapter_depth_sd14v1``… converted to
  safetensors): the full adapter's resnet blocks numbered flat, ``body.K.block1`` for block ``j`` of level ``i``
  at ``K = i·blocks + j`` (4 levels), the level's channel change in ``body.K.in_conv``; the light adapter
  (``t2iadapter_color``) ``body.I.in_conv`` / ``body.I.body.J.…`` / ``body.I.out_conv``;
* ``diffusers`` — ``diffusion_pytorch_model.safetensors`` of a diffusers folder (every SDXL adapter,
  ``t2i-adapter-canny-sdxl-1.0``…, and the SD 1.5 re-releases): ``adapter.body.I.resnets.J.…``.

Kinds: ``full_adapter`` (SD 1.x: pixels unshuffled by 8), ``full_adapter_xl`` (SDXL: by 16, one downsampling
level) and ``light_adapter``. The unshuffle factor — and with it the family — comes from the first convolution's
input channels (3 colour channels × factor², or 1 for sketch adapters). A file written by sdfleet's tools carries
its config and family in its metadata, which win (the tiny test adapters). Style and Co-Adapters (CLIP-image
adapters) and the variants diffusers cannot build (convolutional downsampling, skip convolutions) are refused
with the reason."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.engine.sd.checkpoints import embedded_configs
from sdfleet.errors import ValidationError

__all__ = [
    "ADAPTER_METADATA_KEY",
    "AdapterInfo",
    "adapter_ldm_name",
    "detect_adapter",
    "is_adapter",
]

ADAPTER_METADATA_KEY = "sdfleet.t2i_adapter_config"
"""The safetensors metadata key of a T2I-Adapter's own diffusers config (``_arch``: its family)."""

FULL, FULL_XL, LIGHT = "full_adapter", "full_adapter_xl", "light_adapter"
LDM, DIFFUSERS = "ldm", "diffusers"
_PREFIX = "adapter."
_LDM_LEVELS = 4  # TencentARC's full adapters: channels (320, 640, 1280, 1280)


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """A T2I-Adapter file: the family it steers (``arch``: ``sd1``/``sdxl``), its ``kind`` (diffusers'
    ``adapter_type``), key ``layout``, the ``T2IAdapter`` ``config``, and the ``prefix`` its keys carry."""

    arch: str
    kind: str
    layout: str
    config: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""


def _unprefixed(shapes: Mapping[str, Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], str]:
    if any(k.startswith(_PREFIX) for k in shapes):
        return {k[len(_PREFIX) :]: tuple(v) for k, v in shapes.items() if k.startswith(_PREFIX)}, _PREFIX
    return {k: tuple(v) for k, v in shapes.items()}, ""


def is_adapter(shapes: Mapping[str, Sequence[int]]) -> bool:
    """Whether these tensors look like a T2I-Adapter (full or light, either layout)."""
    s, _ = _unprefixed(shapes)
    full = "conv_in.weight" in s and any(
        re.match(r"^body\.\d+\.(resnets\.\d+\.)?block1\.weight$", k) for k in s
    )
    light = "body.0.in_conv.weight" in s and "body.0.out_conv.weight" in s
    return (full or light) and not any(
        k.startswith(("input_hint_block.", "controlnet_cond_embedding.")) for k in s
    )


def _count(keys: Sequence[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _unshuffle(total: int) -> tuple[int, int]:
    """(image channels, unshuffle factor) from the first convolution's input channels."""
    for channels in (3, 1):
        if total % channels == 0:
            factor = math.isqrt(total // channels)
            if factor * factor * channels == total:
                return channels, factor
    raise ValidationError(f"not a T2I-Adapter this engine knows: {total} input channels", field="model")


def detect_adapter(
    shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None
) -> AdapterInfo:
    """Tell a T2I-Adapter's family, kind, layout and config from its tensors (and sdfleet's metadata)."""
    if not is_adapter(shapes):
        raise ValidationError("not a T2I-Adapter: no conv_in / body blocks", field="model")
    s, prefix = _unprefixed(shapes)
    keys = list(s)
    unsupported = [k for k in keys if k.endswith(("down_opt.op.weight", "skep.weight"))]
    if unsupported or any(k.startswith(("ln_post", "style_embedding", "transformer_layes")) for k in keys):
        raise ValidationError(
            "this T2I-Adapter variant (style/co-adapter, or convolutional downsampling and skip convolutions) "
            "is not one diffusers builds",
            field="model",
        )
    own = embedded_configs(metadata or {}, ADAPTER_METADATA_KEY)
    if own and own.get("_arch"):
        config = {k: v for k, v in own.items() if not k.startswith("_")}
        layout = DIFFUSERS if "body.0.resnets.0.block1.weight" in s else LDM
        return AdapterInfo(str(own["_arch"]), str(config.get("adapter_type", FULL)), layout, config, prefix)
    return _light(s, keys, prefix) if "body.0.out_conv.weight" in s else _full(s, keys, prefix)


def _full(s: Mapping[str, tuple[int, ...]], keys: list[str], prefix: str) -> AdapterInfo:
    colours, factor = _unshuffle(s["conv_in.weight"][1])
    if "body.0.resnets.0.block1.weight" in s:
        layout = DIFFUSERS
        levels = _count(keys, r"^body\.(\d+)\.resnets\.")
        blocks = _count(keys, r"^body\.0\.resnets\.(\d+)\.")
        channels = [s[f"body.{i}.resnets.0.block1.weight"][0] for i in range(levels)]
        kernels = [s[f"body.{i}.resnets.0.block2.weight"][2:] for i in range(levels)]
    else:
        layout = LDM
        flat = _count(keys, r"^body\.(\d+)\.block1\.")
        if flat % _LDM_LEVELS:
            raise ValidationError(f"not a T2I-Adapter this engine knows: {flat} resnet blocks", field="model")
        blocks = flat // _LDM_LEVELS
        channels = [s[f"body.{i * blocks}.block1.weight"][0] for i in range(_LDM_LEVELS)]
        kernels = [s[f"body.{i * blocks}.block2.weight"][2:] for i in range(_LDM_LEVELS)]
    if any(tuple(k) != (1, 1) for k in kernels):
        raise ValidationError(
            "this T2I-Adapter's resnet blocks use wide second kernels, which diffusers does not build",
            field="model",
        )
    if factor == 16:
        arch, kind = "sdxl", FULL_XL
    elif factor == 8:
        arch, kind = "sd1", FULL
    else:
        raise ValidationError(
            f"not a T2I-Adapter this engine knows: pixels unshuffled by {factor} (SD 1.x: 8, SDXL: 16)",
            field="model",
        )
    config = {
        "in_channels": colours,
        "channels": [int(c) for c in channels],
        "num_res_blocks": blocks,
        "downscale_factor": factor,
        "adapter_type": kind,
    }
    return AdapterInfo(arch, kind, layout, config, prefix)


def _light(s: Mapping[str, tuple[int, ...]], keys: list[str], prefix: str) -> AdapterInfo:
    colours, factor = _unshuffle(s["body.0.in_conv.weight"][1])
    layout = DIFFUSERS if "body.0.resnets.0.block1.weight" in s else LDM
    inner = "resnets" if layout == DIFFUSERS else "body"
    levels = _count(keys, r"^body\.(\d+)\.out_conv\.")
    blocks = _count(keys, rf"^body\.0\.{inner}\.(\d+)\.")
    outs = [int(s[f"body.{i}.out_conv.weight"][0]) for i in range(levels)]
    config = {
        "in_channels": colours,
        "channels": outs[:-1],  # the last level repeats the one before it
        "num_res_blocks": blocks,
        "downscale_factor": factor,
        "adapter_type": LIGHT,
    }
    return AdapterInfo("sd1", LIGHT, layout, config, prefix)


def adapter_ldm_name(key: str, kind: str, blocks: int) -> str:
    """The original-layout name of one diffusers ``T2IAdapter`` key (``adapter.`` prefix dropped): a full
    adapter's blocks numbered flat, a light adapter's resnets under ``body``."""
    name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
    found = re.match(r"^body\.(\d+)\.resnets\.(\d+)\.(.*)$", name)
    if found:
        level, block, rest = int(found.group(1)), int(found.group(2)), found.group(3)
        if kind == LIGHT:
            return f"body.{level}.body.{block}.{rest}"
        return f"body.{level * blocks + block}.{rest}"
    found = re.match(r"^body\.(\d+)\.in_conv\.(.*)$", name)
    if found and kind != LIGHT:
        return f"body.{int(found.group(1)) * blocks}.in_conv.{found.group(2)}"
    return name
