"""Face restorers: a net that takes an aligned 512×512 face and returns it restored. GFPGAN and CodeFormer
(and RestoreFormer) load through spandrel (the ``spandrel`` extra); their inputs and outputs are in
[-1, 1], and CodeFormer takes a fidelity weight (0 = most restoration, 1 = closest to the input)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sdfleet.errors import ModelUnavailable

log = logging.getLogger("sdfleet.engine.faces")


class FaceRestorer(Protocol):
    """Restores one aligned face: RGB ``uint8`` ``(S, S, 3)`` in, the same shape out."""

    family: str

    def restore(self, face: np.ndarray, *, weight: float) -> np.ndarray: ...


def restorers_loadable() -> bool:
    """Whether this machine can load face restorers (spandrel is installed)."""
    return importlib.util.find_spec("spandrel") is not None


class SpandrelRestorer:
    """A GFPGAN / CodeFormer / RestoreFormer file loaded by spandrel, run on ``device``."""

    def __init__(self, path: Path, device: str) -> None:
        import spandrel  # type: ignore[import-not-found,unused-ignore]
        import torch

        if not path.suffix.lower() == ".safetensors":
            raise ModelUnavailable(
                f"{path.name}: face restorers load from .safetensors only", retryable=False
            )
        descriptor: Any = spandrel.ModelLoader(device=torch.device(device)).load_from_file(str(path))
        if getattr(descriptor, "purpose", None) != "FaceSR":
            raise ModelUnavailable(
                f"{path.name} is not a face restorer (spandrel: {descriptor.purpose})", retryable=False
            )
        descriptor.eval()
        self.net = descriptor.model
        self.family = str(descriptor.architecture.id).lower()
        self.device = device
        self.size = 512
        log.info("faces.restorer_loaded path=%s family=%s device=%s", path.name, self.family, device)

    def restore(self, face: np.ndarray, *, weight: float) -> np.ndarray:
        import torch

        tensor = (
            torch.from_numpy(face.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None].to(self.device)
        )
        with torch.inference_mode():
            if self.family == "codeformer":
                out = self.net(tensor, weight=weight, adain=True)
            else:
                out = self.net(tensor, return_rgb=False)
        out = out[0] if isinstance(out, tuple | list) else out
        pixels = ((out[0].float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(pixels)


def load_restorer(path: Path, device: str) -> FaceRestorer:
    """The face restorer of ``path``; :class:`ModelUnavailable` when spandrel is not installed here."""
    if not restorers_loadable():
        raise ModelUnavailable(
            "face restorers load through spandrel, which this worker lacks: pip install 'sdfleet[spandrel]'",
            retryable=True,
        )
    return SpandrelRestorer(path, device)


__all__ = ["FaceRestorer", "SpandrelRestorer", "load_restorer", "restorers_loadable"]
