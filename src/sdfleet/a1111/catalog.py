"""The registry as A1111 names it: checkpoint titles (``name [hash10]``), ``model_name`` and the
:class:`Catalog` of checkpoints and VAEs a request may name, found by any alias A1111 accepts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sdfleet.domain import ModelRecord
from sdfleet.specs.upscale import a1111_name

_TITLE_HASH = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")


def checkpoint_title(model: ModelRecord) -> str:
    """A1111's checkpoint title: ``name [hash10]`` (just the name when the registry has no hash)."""
    return f"{model.name} [{model.short_hash}]" if model.sha256 else model.name


def model_name_of(model: ModelRecord) -> str:
    """A1111's ``model_name``: the name with path separators replaced by ``_``."""
    return model.name.replace("/", "_").replace("\\", "_")


def _file_names(model: ModelRecord) -> tuple[str, str]:
    """The source's file name and its stem (A1111 accepts both as checkpoint aliases)."""
    base = re.split(r"[/\\]", model.source.split("?", 1)[0].rstrip("/"))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return base, stem


@dataclass(frozen=True, slots=True)
class Catalog:
    """The registry entries a request may name: checkpoints, VAEs and upscalers."""

    checkpoints: Sequence[ModelRecord] = ()
    vaes: Sequence[ModelRecord] = ()
    upscalers: Sequence[ModelRecord] = ()
    face_restorers: Sequence[ModelRecord] = ()
    controlnets: Sequence[ModelRecord] = ()

    def checkpoint(self, alias: str | None) -> ModelRecord | None:
        """The checkpoint an A1111 alias names: the title ``name [hash]``, the registry name, A1111's
        ``model_name``, the file name or its stem, the 10-digit short hash or the full sha256."""
        if not alias or not alias.strip():
            return None
        wanted = alias.strip()
        titled = _TITLE_HASH.match(wanted)
        candidates = [wanted]
        if titled:
            candidates.append(titled.group("name"))
        for key in candidates:
            for model in self.checkpoints:
                if key in (model.name, checkpoint_title(model), model_name_of(model), *_file_names(model)):
                    return model
            if key.lower().endswith((".safetensors", ".ckpt")):
                stem = key.rsplit(".", 1)[0]
                for model in self.checkpoints:
                    if stem in (model.name, model_name_of(model)):
                        return model
        lowered = wanted.lower()
        if re.fullmatch(r"[0-9a-f]{10}|[0-9a-f]{64}", lowered):
            for model in self.checkpoints:
                if model.sha256 and (model.sha256 == lowered or model.short_hash == lowered):
                    return model
        return None

    def upscaler(self, name: str) -> ModelRecord | None:
        """The upscaler a request names: its registry name, file name or stem, or the A1111 display name
        of the Real-ESRGAN file it is (``R-ESRGAN 4x+`` finds a registered ``RealESRGAN_x4plus.safetensors``)."""
        for model in self.upscalers:
            if name in (model.name, model_name_of(model), *_file_names(model)):
                return model
        for model in self.upscalers:
            if a1111_name(_file_names(model)[1]) == name:
                return model
        return None

    def controlnet(self, alias: str) -> ModelRecord | None:
        """The ControlNet an extension client names, matched as the extension matches: ``name [hash]``, the
        name, the file's name or stem, in any case; else the one whose name contains the alias."""
        wanted = alias.strip()
        titled = _TITLE_HASH.match(wanted)
        key = (titled.group("name") if titled else wanted).lower()
        if not key:
            return None
        for model in self.controlnets:
            if key in (model.name.lower(), *(n.lower() for n in _file_names(model))):
                return model
        close = sorted((m for m in self.controlnets if key in m.name.lower()), key=lambda m: len(m.name))
        return close[0] if close else None

    def face_restorer(self, family: str) -> ModelRecord | None:
        """The face restorer of ``family`` (``codeformer``, ``gfpgan``), else any registered one; first by name."""
        ranked = sorted(self.face_restorers, key=lambda m: (m.arch != family, m.name))
        return ranked[0] if ranked else None

    def vae(self, name: str | None) -> ModelRecord | None:
        """The VAE called ``name`` (registry name, file name or stem)."""
        if not name:
            return None
        for model in self.vaes:
            if name in (model.name, model_name_of(model), *_file_names(model)):
                return model
        return None
