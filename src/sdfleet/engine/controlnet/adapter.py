"""T2I-Adapter files loaded offline into diffusers' ``T2IAdapter`` (applied in the sampling loop by
:mod:`.adapter_pass`).

Loading is offline: the config comes from the file's shapes (:mod:`.adapter_detect`), every weight is looked up
by name in either layout and a missing or extra tensor is an error naming the file."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sdfleet.engine.controlnet.adapter_detect import LDM, AdapterInfo, adapter_ldm_name, detect_adapter
from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.errors import ValidationError

__all__ = ["LoadedAdapter", "load_adapter", "read_adapter"]


class LoadedAdapter:
    """A T2I-Adapter on its device: diffusers' ``T2IAdapter`` and what the file is."""

    union = False

    def __init__(self, module: Any, info: AdapterInfo, path: Path) -> None:
        self.module = module
        self.info = info
        self.path = path

    @property
    def arch(self) -> str:
        """The SD family it steers (``sd1``, ``sdxl``)."""
        return self.info.arch

    @property
    def downscale(self) -> int:
        """What the picture's sides must be multiples of."""
        return int(self.module.total_downscale_factor)


def read_adapter(path: Path, field: str = "model") -> AdapterInfo:
    """What a T2I-Adapter file is, from its header alone (422 naming ``field`` when it is not one)."""
    if path.suffix.lower() != ".safetensors":
        raise ValidationError(
            f"{path.name}: T2I-Adapters load from .safetensors; convert it first: sdfleet models convert {path}",
            field=field,
        )
    header = read_header(path)
    try:
        return detect_adapter(header.shapes, header.metadata)
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc.message}", field=field) from exc


def load_adapter(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    field: str = "model",
) -> LoadedAdapter:
    """Build the adapter from the file's own shapes and load every weight by name."""
    info = read_adapter(path, field)
    diffusers: Any = importlib.import_module("diffusers")
    try:
        module = diffusers.T2IAdapter(**info.config)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{path.name}: not a T2I-Adapter this engine can build: {exc}", field=field
        ) from exc
    wanted = module.state_dict()
    stored = load_file(str(path))
    blocks = int(info.config.get("num_res_blocks", 2))
    if info.layout == LDM:
        names = {k: info.prefix + adapter_ldm_name(k, info.kind, blocks) for k in wanted}
    else:
        names = {k: info.prefix + k.removeprefix("adapter.") for k in wanted}
    missing = [k for k, name in names.items() if name not in stored]
    extra = sorted(set(stored) - set(names.values()))
    if missing or extra:
        shown = ", ".join((missing or extra)[:3])
        what = "has no" if missing else "has tensors this adapter does not use:"
        raise ValidationError(f"{path.name}: the file {what} {shown}", field=field)
    state = {}
    for key, name in names.items():
        if tuple(stored[name].shape) != tuple(wanted[key].shape):
            raise ValidationError(
                f"{path.name}: {name} is {tuple(stored[name].shape)}, the adapter needs {tuple(wanted[key].shape)}",
                field=field,
            )
        state[key] = stored[name]
    module.load_state_dict(state, strict=True)
    module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedAdapter(module, info, path)
