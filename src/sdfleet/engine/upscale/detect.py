"""What an upscaler file is, read from its tensor names and shapes alone (no torch, no tensor loaded): the
network family, its scale and the sizes its loader needs.

Two families are known here, in the layouts people download:

* ``esrgan`` — RRDBNet: ESRGAN's original layout (``model.0…``, ``model.1.sub.N.RDB1.conv1.0…``: 4x-UltraSharp
  and most community models) and BasicSR's (``conv_first``, ``body.N.rdb1.conv1``, ``conv_up1``: Real-ESRGAN
  ``RealESRGAN_x4plus``, ``x4plus_anime_6B``, and the ×2 / ×1 models that pixel-unshuffle their input);
* ``srvgg`` — Real-ESRGAN Compact, SRVGGNetCompact (``body.0`` … ``body.K``: ``realesr-general-x4v3``,
  ``realesr-animevideov3``).

Any other family is for spandrel (:mod:`sdfleet.engine.upscale.loader`), which names it itself."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sdfleet.errors import ValidationError
from sdfleet.specs.upscale import A1111_NAMES, a1111_name

ESRGAN = "esrgan"
SRVGG = "srvgg"
FAMILIES = (ESRGAN, SRVGG)


@dataclass(frozen=True, slots=True)
class NetInfo:
    """An upscaler net's family and shape: ``scale`` is output side ÷ input side. ``layout`` is ``old`` or
    ``new`` for ESRGAN (key names), ``blocks``/``features``/``growth`` its RRDB sizes, ``convs`` the body
    convolutions of a Compact net, ``unshuffle`` the pixel-unshuffle factor of BasicSR's ×2/×1 models."""

    family: str
    scale: int
    in_channels: int = 3
    out_channels: int = 3
    features: int = 64
    growth: int = 32
    blocks: int = 23
    convs: int = 16
    layout: str = "new"
    unshuffle: int = 1


_OLD_BLOCK = re.compile(r"^model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight$")
_NEW_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.weight$")
_UP = re.compile(r"^conv_up(\d+)\.weight$")
_SRVGG = re.compile(r"^body\.(\d+)\.weight$")

WRAPPERS = ("params_ema", "params", "state_dict", "model")
"""Top-level keys under which training code nests a net's weights (Real-ESRGAN's ``params_ema``)."""


def unwrap_key(key: str) -> str:
    """``key`` without a training wrapper's prefix (``params_ema.conv_first.weight`` → ``conv_first.weight``),
    and without DataParallel's ``module.``."""
    for wrapper in ("params_ema.", "params.", "module."):
        if key.startswith(wrapper):
            return key[len(wrapper) :]
    return key


def _shape(shapes: Mapping[str, Sequence[int]], key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in shapes[key])


def _power_of_two(value: float, what: str) -> int:
    scale = round(value)
    if scale < 1 or abs(value - scale) > 1e-6 or scale & (scale - 1):
        raise ValidationError(
            f"not an upscaler this loader knows: {what} gives scale {value:g}", field="model"
        )
    return scale


def _esrgan_old(shapes: Mapping[str, Sequence[int]]) -> NetInfo:
    blocks = sorted(int(m.group(1)) for k in shapes if (m := _OLD_BLOCK.match(k)))
    first = _shape(shapes, "model.0.weight")
    growth = _shape(shapes, "model.1.sub.0.RDB1.conv1.0.weight")[0]
    # after the body: one conv per ×2 upsampling (model.3, model.6, …), then the HR conv and the last conv
    tops = sorted(int(m.group(1)) for k in shapes if (m := _OLD_TOP.match(k)))
    tail = [i for i in tops if i >= 3]
    if len(tail) < 2:
        raise ValidationError("an ESRGAN file without its HR and last convolutions", field="model")
    last = _shape(shapes, f"model.{tail[-1]}.weight")
    return NetInfo(
        family=ESRGAN,
        scale=2 ** (len(tail) - 2),
        in_channels=first[1],
        out_channels=last[0],
        features=first[0],
        growth=growth,
        blocks=len(blocks),
        layout="old",
    )


def _esrgan_new(shapes: Mapping[str, Sequence[int]]) -> NetInfo:
    blocks = sorted(int(m.group(1)) for k in shapes if (m := _NEW_BLOCK.match(k)))
    first = _shape(shapes, "conv_first.weight")
    last = _shape(shapes, "conv_last.weight")
    ups = sorted(int(m.group(1)) for k in shapes if (m := _UP.match(k)))
    unshuffle = math.isqrt(first[1] // last[0]) if first[1] % last[0] == 0 else 0
    if unshuffle < 1 or unshuffle * unshuffle * last[0] != first[1]:
        raise ValidationError(
            f"an ESRGAN file with {first[1]} input channels for {last[0]} output channels", field="model"
        )
    scale = _power_of_two(2 ** len(ups) / unshuffle, "its upsampling convolutions")
    return NetInfo(
        family=ESRGAN,
        scale=scale,
        in_channels=last[0],
        out_channels=last[0],
        features=first[0],
        growth=_shape(shapes, "body.0.rdb1.conv1.weight")[0],
        blocks=len(blocks),
        layout="new",
        unshuffle=unshuffle,
    )


def _srvgg(shapes: Mapping[str, Sequence[int]]) -> NetInfo:
    indices = sorted(int(m.group(1)) for k in shapes if (m := _SRVGG.match(k)))
    convs = [i for i in indices if len(shapes[f"body.{i}.weight"]) == 4]
    activations = [i for i in indices if len(shapes[f"body.{i}.weight"]) == 1]
    expected = list(range(0, 2 * len(convs) - 1, 2))
    if convs != expected or activations != list(range(1, 2 * len(convs) - 2, 2)):
        raise ValidationError(
            "a Compact (SRVGG) file must alternate convolutions and PReLU activations", field="model"
        )
    first = _shape(shapes, "body.0.weight")
    last = _shape(shapes, f"body.{convs[-1]}.weight")
    channels = first[1]
    scale = _power_of_two(math.sqrt(last[0] / channels), "its last convolution")
    return NetInfo(
        family=SRVGG,
        scale=scale,
        in_channels=channels,
        out_channels=channels,
        features=first[0],
        convs=len(convs) - 2,
    )


def detect_net(shapes: Mapping[str, Sequence[int]]) -> NetInfo:
    """The family and sizes of the upscaler whose tensors have ``shapes`` (keys may carry a training
    wrapper's prefix); :class:`ValidationError` naming ``model`` when it is neither family."""
    plain = {unwrap_key(k): v for k, v in shapes.items()}
    if "model.0.weight" in plain and any(_OLD_BLOCK.match(k) for k in plain):
        return _esrgan_old(plain)
    if "conv_first.weight" in plain and "conv_last.weight" in plain:
        return _esrgan_new(plain)
    if "body.0.weight" in plain and not any(k.startswith("body.0.rdb") for k in plain):
        return _srvgg(plain)
    raise ValidationError(
        "not an ESRGAN (RRDB) or Real-ESRGAN Compact (SRVGG) upscaler; other families load through spandrel "
        "(pip install 'sdfleet[spandrel]')",
        field="model",
    )


__all__ = [
    "A1111_NAMES",
    "ESRGAN",
    "FAMILIES",
    "SRVGG",
    "WRAPPERS",
    "NetInfo",
    "a1111_name",
    "detect_net",
    "unwrap_key",
]
