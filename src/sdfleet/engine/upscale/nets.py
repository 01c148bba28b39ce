"""The two upscaler families sdfleet loads without spandrel (so CPU workers and CI need no torchvision):
ESRGAN's RRDBNet and Real-ESRGAN's Compact SRVGGNet, as published (Wang et al. 2018, 2021), with the
state-dict names of BasicSR; ESRGAN's original key names are mapped onto them (:func:`old_to_new`).

Both take and return ``(N, C, H, W)`` float tensors in [0, 1]."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from sdfleet.engine.upscale.detect import ESRGAN, SRVGG, NetInfo
from sdfleet.errors import ValidationError


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convolutions, each fed every earlier feature map; the result scaled by 0.2 onto the input."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, growth, 3, 1, 1)
        self.conv2 = nn.Conv2d(features + growth, growth, 3, 1, 1)
        self.conv3 = nn.Conv2d(features + 2 * growth, growth, 3, 1, 1)
        self.conv4 = nn.Conv2d(features + 3 * growth, growth, 3, 1, 1)
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5: torch.Tensor = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, scaled by 0.2 onto the input."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN: RRDB trunk, nearest ×2 upsamplings each followed by a convolution. BasicSR's ×2
    and ×1 models pixel-unshuffle their input first (``info.unshuffle``) and keep the two ×2 steps."""

    def __init__(self, info: NetInfo) -> None:
        super().__init__()
        self.info = info
        nf = info.features
        self.conv_first = nn.Conv2d(info.in_channels * info.unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, info.growth) for _ in range(info.blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        ups = (info.scale * info.unshuffle).bit_length() - 1
        self.ups = ups
        for i in range(1, ups + 1):
            self.add_module(f"conv_up{i}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, info.out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.info.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.info.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.ups + 1):
            conv = getattr(self, f"conv_up{i}")
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))  # type: ignore[no-any-return]


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN Compact: a plain stack of convolutions with PReLU at low resolution, a pixel shuffle to
    the output size, and the nearest-upsampled input added back."""

    def __init__(self, info: NetInfo) -> None:
        super().__init__()
        self.info = info
        nf = info.features
        layers: list[nn.Module] = [nn.Conv2d(info.in_channels, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        for _ in range(info.convs):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        layers.append(nn.Conv2d(nf, info.out_channels * info.scale**2, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.info.scale)
        return out + F.interpolate(x, scale_factor=self.info.scale, mode="nearest")


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def old_to_new(state: dict[str, torch.Tensor], info: NetInfo) -> dict[str, torch.Tensor]:
    """ESRGAN's original key names (``model.1.sub.3.RDB2.conv4.0.weight``) as BasicSR's (``body.3.rdb2.conv4.weight``)."""
    ups = info.scale.bit_length() - 1
    # model.0 first conv; model.1.sub.<blocks> the trunk's last conv; then model.3, model.6, … one per ×2
    # upsampling; then the HR and the last conv (the remaining two indices)
    top_names = {0: "conv_first"}
    tail = sorted({int(m.group(1)) for k in state if (m := _OLD_TOP.match(k)) and int(m.group(1)) >= 3})
    for n, index in enumerate(tail[:ups], start=1):
        top_names[index] = f"conv_up{n}"
    top_names[tail[ups]] = "conv_hr"
    top_names[tail[ups + 1]] = "conv_last"
    out: dict[str, torch.Tensor] = {}
    trunk = f"model.1.sub.{info.blocks}."
    for key, value in state.items():
        if m := _OLD_RDB.match(key):
            block, rdb, conv, kind = m.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif key.startswith(trunk):
            out["conv_body." + key[len(trunk) :]] = value
        elif (m := _OLD_TOP.match(key)) and int(m.group(1)) in top_names:
            out[f"{top_names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            raise ValidationError(f"an ESRGAN file with an unexpected tensor {key!r}", field="model")
    return out


def build_net(info: NetInfo) -> nn.Module:
    """An untrained net of ``info``'s family and sizes."""
    if info.family == ESRGAN:
        return RRDBNet(info)
    if info.family == SRVGG:
        return SRVGGNetCompact(info)
    raise ValidationError(f"no built-in loader for the {info.family!r} family", field="model")


__all__ = ["RRDBNet", "SRVGGNetCompact", "build_net", "old_to_new"]
