"""Load a ControlNet file into diffusers' ``ControlNetModel`` (or ``ControlNetUnionModel``) offline: the
config from :func:`~sdfleet.engine.controlnet.detect.detect_controlnet`, the weights from the file in either
layout — original-layout keys are found through the same name mapping sdfleet writes them with
(:func:`~sdfleet.engine.sd.convert.controlnet_ldm_name`), so every tensor the model needs is looked up by
name and any missing or extra one is an error naming the file, not a half-loaded net. ``.safetensors``
only: a pickle goes through ``sdfleet models convert`` first (weights only)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sdfleet.domain import UNION_CONTROL_TYPES, ControlNetUnit
from sdfleet.engine.controlnet.adapter import LoadedAdapter, load_adapter
from sdfleet.engine.controlnet.adapter_detect import is_adapter
from sdfleet.engine.controlnet.detect import LDM, UNION, ControlNetInfo, detect_controlnet
from sdfleet.engine.pool import NetPool
from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.engine.sd.convert import controlnet_hint_blocks, controlnet_ldm_name
from sdfleet.errors import ValidationError

__all__ = [
    "ControlModel",
    "ControlNetPool",
    "LoadedControlNet",
    "load_controlnet",
    "read_controlnet",
    "union_type_index",
]


class LoadedControlNet:
    """A ControlNet on its device: the diffusers module and what the file is."""

    def __init__(self, module: Any, info: ControlNetInfo, path: Path) -> None:
        self.module = module
        self.info = info
        self.path = path

    @property
    def arch(self) -> str:
        """The SD family it steers (``sd1``, ``sd2``, ``sdxl``)."""
        return self.info.arch

    @property
    def union(self) -> bool:
        """Whether it is a ControlNet Union (one net, a control type per image)."""
        return self.info.variant == UNION


def read_controlnet(path: Path, field: str = "model") -> ControlNetInfo:
    """What a ControlNet file is, from its header alone (422 naming ``field`` when it is not one)."""
    if path.suffix.lower() != ".safetensors":
        raise ValidationError(
            f"{path.name}: ControlNets load from .safetensors; convert it first: sdfleet models convert {path}",
            field=field,
        )
    header = read_header(path)
    try:
        return detect_controlnet(header.shapes, header.metadata)
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc.message}", field=field) from exc


def load_controlnet(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    field: str = "model",
) -> LoadedControlNet:
    """Build the net from the file's own shapes and load every weight by name."""
    info = read_controlnet(path, field)
    diffusers: Any = importlib.import_module("diffusers")
    cls = diffusers.ControlNetUnionModel if info.variant == UNION else diffusers.ControlNetModel
    config = dict(info.config)
    if info.variant == UNION:
        config.pop("mid_block_type", None)
    try:
        module = cls(**config)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{path.name}: not a ControlNet this engine can build: {exc}", field=field
        ) from exc
    wanted = module.state_dict()
    stored = load_file(str(path))
    if info.layout == LDM:
        stored = {k[len(info.prefix) :]: v for k, v in stored.items() if k.startswith(info.prefix)}
        hint = controlnet_hint_blocks(wanted)
        names = {k: controlnet_ldm_name(k, int(config["layers_per_block"]), hint) for k in wanted}
    else:
        names = {k: k for k in wanted}
    missing = [k for k, name in names.items() if name not in stored]
    extra = sorted(set(stored) - set(names.values()))
    if missing or extra:
        shown = ", ".join((missing or extra)[:3])
        what = "has no" if missing else "has tensors this net does not use:"
        raise ValidationError(f"{path.name}: the file {what} {shown}", field=field)
    state = {}
    for key, name in names.items():
        tensor = stored[name]
        if tuple(tensor.shape) != tuple(wanted[key].shape):
            raise ValidationError(
                f"{path.name}: {name} is {tuple(tensor.shape)}, the net needs {tuple(wanted[key].shape)}",
                field=field,
            )
        state[key] = tensor
    module.load_state_dict(state, strict=True)
    module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedControlNet(module, info, path)


ControlModel = LoadedControlNet | LoadedAdapter
"""What a ControlNet unit's ``model`` loads as: a ControlNet (or Union) or a T2I-Adapter."""


class ControlNetPool:
    """The ControlNets and T2I-Adapters an engine has loaded (the last ``keep`` used), found by registry name
    through ``files`` (a ``{name: path}`` mapping or a lookup returning None when unknown); what a file is,
    is read from its tensors."""

    def __init__(
        self,
        files: Mapping[str, Path] | Callable[[str], Path | None] | None,
        device: torch.device,
        dtype: torch.dtype,
        keep: int = 4,
    ) -> None:
        self.files = files
        self.device = device
        self.dtype = dtype
        self.pool = NetPool(keep=keep)

    def loaded_models(self) -> list[str]:
        """``controlnet:<name>`` for the nets and T2I-Adapters held in memory."""
        return [f"controlnet:{n}" for n in self.pool.loaded_names()]

    def path(self, name: str) -> Path | None:
        if self.files is None:
            return None
        return self.files(name) if callable(self.files) else self.files.get(name)

    def get(self, index: int, unit: ControlNetUnit, checkpoint_arch: str) -> ControlModel:
        """Unit ``index``'s net or adapter, loaded now if it is not, and checked against the checkpoint's
        family (and, for a Union net, the unit's control type)."""
        field = f"controlnet.{index}.model"
        path = self.path(unit.model)
        if path is None or not path.is_file():
            raise ValidationError(f"unknown ControlNet {unit.model!r}", field=field)
        dtype = self.dtype

        def load(file: Path, device: str) -> ControlModel:
            if file.suffix.lower() == ".safetensors" and is_adapter(read_header(file).shapes):
                return load_adapter(file, device=device, dtype=dtype, field=field)
            return load_controlnet(file, device=device, dtype=dtype, field=field)

        net: ControlModel = self.pool.get(path, str(self.device), load, name=unit.model)
        if net.arch != checkpoint_arch:
            what = "T2I-Adapter" if isinstance(net, LoadedAdapter) else "ControlNet"
            raise ValidationError(
                f"{what} {unit.model!r} is made for {net.arch.upper()}, the checkpoint is "
                f"{checkpoint_arch.upper()}",
                field=field,
            )
        if isinstance(net, LoadedControlNet) and net.union:
            union_type_index(net, unit, index)
        return net


def union_type_index(net: LoadedControlNet, unit: ControlNetUnit, index: int) -> int:
    """Which of the Union net's task embeddings unit ``index`` selects: its ``union_control_type`` (as the
    A1111 ControlNet extension sends it) — a 422 naming that field when the unit has none or the net was
    trained without it (``controlnet-union-sdxl-1.0`` knows the first six, ProMax all eight)."""
    field = f"controlnet.{index}.union_control_type"
    known = int(net.info.config.get("num_control_type", 6))
    types = ", ".join(UNION_CONTROL_TYPES[:known])
    if unit.union_control_type is None:
        raise ValidationError(
            f"ControlNet {unit.model!r} is a ControlNet Union: say what the control image is in "
            f"union_control_type (one of {types})",
            field=field,
        )
    position = UNION_CONTROL_TYPES.index(unit.union_control_type)
    if position >= known:
        raise ValidationError(
            f"ControlNet {unit.model!r} knows {known} control types ({types}), not {unit.union_control_type!r}",
            field=field,
        )
    return position
