"""Load an upscaler file into an :class:`UpscalerNet` on a device: through spandrel when it is installed
(``pip install 'sdfleet[spandrel]'``: dozens of families — SwinIR, HAT, DAT, OmniSR… — but it needs a
torchvision that matches torch), else through sdfleet's own loaders of the two core families
(:mod:`sdfleet.engine.upscale.nets`), so CPU workers and CI need no torchvision.

Only ``.safetensors`` files load: a pickle (``.pth``) is converted first, explicitly
(:func:`convert_pickle`, ``sdfleet models convert``), with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.engine.upscale.detect import WRAPPERS, NetInfo, detect_net, unwrap_key
from sdfleet.engine.upscale.nets import build_net, old_to_new
from sdfleet.engine.upscale.tiles import DEFAULT_OVERLAP, Precision, run_tiled, tile_for
from sdfleet.errors import ValidationError

log = logging.getLogger("sdfleet.engine.upscale")


def spandrel_installed() -> bool:
    """Whether the optional spandrel extra can be imported here."""
    return importlib.util.find_spec("spandrel") is not None


def _dtype_for(device: str, supports_half: bool = True) -> torch.dtype:
    return torch.float16 if device.startswith("cuda") and supports_half else torch.float32


class UpscalerNet:
    """A loaded upscaler: ``scale``× on any image size, tiled (:func:`~sdfleet.engine.upscale.tiles.run_tiled`)
    with only the current tile on ``device``."""

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        *,
        module: torch.nn.Module,
        scale: int,
        family: str,
        device: str,
        features: int = 64,
        supports_half: bool = True,
        in_channels: int = 3,
    ) -> None:
        self.net, self.module = net, module
        self.scale, self.family, self.device = scale, family, device
        self.features, self.in_channels = features, in_channels
        self.precision = Precision(_dtype_for(device, supports_half))
        module.to(device=device, dtype=self.precision.dtype)

    def _to_fp32(self) -> None:
        self.module.float()

    def upscale_tensor(
        self,
        tensor: torch.Tensor,
        *,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        should_stop: Callable[[], bool] = lambda: False,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """``(1, C, H, W)`` in [0, 1] on the host → ``(1, C, H·scale, W·scale)`` on the host."""
        side = tile or tile_for(self.device, self.features, self.scale)
        return run_tiled(
            self.net,
            tensor,
            scale=self.scale,
            device=self.device,
            precision=self.precision,
            to_fp32=self._to_fp32,
            tile=side,
            overlap=overlap,
            should_stop=should_stop,
            on_tile=on_tile,
        )

    def upscale(
        self,
        image: Image.Image,
        *,
        tile: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """One pass of the net over ``image`` (RGB; grey and alpha are dropped to RGB first)."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
        if self.in_channels == 1:
            tensor = tensor.mean(dim=1, keepdim=True)
        out = self.upscale_tensor(tensor, tile=tile, should_stop=should_stop, on_tile=on_tile)
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1)
        pixels = (out[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(pixels[:, :, :3], mode="RGB")


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, training wrappers' prefixes dropped."""
    from safetensors.torch import load_file

    return {unwrap_key(k): v for k, v in load_file(str(path)).items()}


def _builtin(path: Path, device: str) -> UpscalerNet:
    info: NetInfo = detect_net(read_header(path).shapes)
    state = read_state(path)
    if info.layout == "old":
        state = old_to_new(state, info)
    module = build_net(info)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValidationError(f"{path.name} does not fit a {info.family} net: {exc}", field="model") from exc
    module.eval().requires_grad_(False)
    log.info(
        "upscale.loaded path=%s family=%s scale=%d blocks=%d loader=builtin device=%s",
        path.name,
        info.family,
        info.scale,
        info.blocks if info.family == "esrgan" else info.convs,
        device,
    )
    return UpscalerNet(
        module,
        module=module,
        scale=info.scale,
        family=info.family,
        device=device,
        features=info.features,
        in_channels=info.in_channels,
    )


def _spandrel(path: Path, device: str) -> UpscalerNet:
    import spandrel  # type: ignore[import-not-found,unused-ignore]

    descriptor: Any = spandrel.ModelLoader(device=torch.device(device)).load_from_file(str(path))
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose not in (
        "SR",
        "Restoration",
    ):
        raise ValidationError(
            f"{path.name} is not an upscaler (spandrel: {descriptor.purpose})", field="model"
        )
    descriptor.eval()
    family = str(descriptor.architecture.id).lower()
    log.info(
        "upscale.loaded path=%s family=%s scale=%d loader=spandrel device=%s",
        path.name,
        family,
        descriptor.scale,
        device,
    )
    return UpscalerNet(
        descriptor,
        module=descriptor.model,
        scale=int(descriptor.scale),
        family=family,
        device=device,
        supports_half=bool(descriptor.supports_half),
        in_channels=int(descriptor.input_channels),
    )


def load_upscaler(path: Path, *, device: str, use_spandrel: bool | None = None) -> UpscalerNet:
    """The upscaler of ``path`` on ``device``; spandrel when installed (``use_spandrel`` None) or asked."""
    if path.suffix.lower() != ".safetensors":
        raise ValidationError(
            f"{path.name}: upscalers load from .safetensors only; convert a pickle first "
            "(sdfleet models convert FILE.pth)",
            field="model",
        )
    if use_spandrel is None:
        use_spandrel = spandrel_installed()
    return _spandrel(path, device) if use_spandrel else _builtin(path, device)


def convert_pickle(source: Path, target: Path) -> NetInfo | None:
    """Write the tensors of the pickle ``source`` (``.pth``/``.pt``/``.ckpt``) to the safetensors ``target``,
    unpickled with ``weights_only=True`` (tensors and containers only: no code runs), unwrapping a training
    wrapper (``params_ema``, ``params``, ``state_dict``) and flattening a dictionary of state dicts (an
    IP-Adapter's ``image_proj`` and ``ip_adapter``) into dotted names. Returns the net's family when it is one of ours."""
    from safetensors.torch import save_file

    try:
        loaded = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error of any kind: the file is refused, not run
        raise ValidationError(f"{source.name}: not a weights-only pickle ({exc})", field="model") from exc
    if isinstance(loaded, dict):
        for wrapper in WRAPPERS:
            inner = loaded.get(wrapper)
            if isinstance(inner, dict):
                loaded = inner
                break
    if isinstance(loaded, dict) and loaded and all(isinstance(v, dict) for v in loaded.values()):
        # IP-Adapter .bin files: {"image_proj": {…}, "ip_adapter": {…}} → image_proj.…, ip_adapter.…
        loaded = {f"{part}.{k}": v for part, inner in loaded.items() for k, v in inner.items()}
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValidationError(f"{source.name}: not a dictionary of tensors", field="model")
    tensors = {str(k): v.contiguous() for k, v in loaded.items()}
    save_file(tensors, str(target), metadata={"sdfleet.converted_from": source.name})
    try:
        return detect_net({k: tuple(v.shape) for k, v in tensors.items()})
    except ValidationError:
        return None


__all__ = ["UpscalerNet", "convert_pickle", "load_upscaler", "read_state", "spandrel_installed"]
