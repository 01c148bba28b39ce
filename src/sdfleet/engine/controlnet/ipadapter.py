"""IP-Adapter units (image prompts) inside sdfleet's own sampling loop.

A ControlNet unit whose ``model`` is a registered IP-Adapter is one of these. For a job, once:

* the unit's image (else the job's first init image) goes through its CLIP vision encoder (a registry
  ``image_encoder``; :mod:`.ipadapter_detect` rebuilds its config from the file) — the projected
  ``image_embeds`` for plain adapters, the penultimate hidden states for Plus and Full-face — and through the
  adapter's image projection (diffusers' ``ImageProjection`` / ``IPAdapterPlusImageProjection`` /
  ``IPAdapterFullImageProjection``, built by ``UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers``)
  into image tokens; the unconditional rows get the tokens of a zero embedding (plain) or of a zero image
  (Plus, Full-face), as diffusers' pipelines make them;
* the UNet's cross-attention processors become diffusers' ``IPAdapterAttnProcessor2_0`` (built by
  ``_convert_ip_adapter_attn_to_diffusers``, one key/value pair per unit; the self-attention processors stay
  the UNet's own objects), and its ``encoder_hid_proj`` a pass-through, since the tokens are already made.

Every step (:meth:`IPAdapterRun.step`) sets each unit's scale — its ``weight`` inside its guidance window
(steps ``i`` of ``n`` with ``start ≤ i/n ≤ end``) and in the passes its ``hr_option`` names, else 0, where
diffusers' processor skips the unit's attention entirely — and hands the UNet each row's tokens. After the
job (:meth:`IPAdapters.detach`, whatever happened) the UNet gets its own processors, ``encoder_hid_proj`` and
config back, so the next job is unaffected. ``control_mode`` does not apply (the A1111 extension hides it for
IP-Adapters too), nor do ``resize_mode`` and the processor resolution: the encoder centre-crops its input."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file

from sdfleet.domain import ControlNetUnit, GenerationSpec
from sdfleet.engine.controlnet.apply import controlnet_infotext
from sdfleet.engine.controlnet.ipadapter_detect import (
    ImageEncoderInfo,
    IPAdapterInfo,
    read_image_encoder,
    read_ip_adapter,
)
from sdfleet.engine.pool import NetPool
from sdfleet.engine.sd.checkpoints import HashCache
from sdfleet.engine.sd.models import Lookup, lookup
from sdfleet.errors import ValidationError
from sdfleet.specs.ipadapter import check_unit_module, encoder_fits

__all__ = [
    "IPAdapterRun",
    "IPAdapters",
    "LoadedIPAdapter",
    "LoadedImageEncoder",
    "load_image_encoder",
    "load_ip_adapter",
]

_PARTS = ("image_proj", "ip_adapter")


class LoadedIPAdapter:
    """An IP-Adapter's two state dicts (``image_proj``, ``ip_adapter``) on the engine's device, what the file
    is, and its image projection (built on first use)."""

    def __init__(self, state: dict[str, dict[str, torch.Tensor]], info: IPAdapterInfo, path: Path) -> None:
        self.state = state
        self.info = info
        self.path = path
        self._projection: Any = None

    def projection(self, unet: Any) -> Any:
        """diffusers' image projection module of this adapter, on the weights' device and dtype."""
        if self._projection is None:
            weights = next(iter(self.state["image_proj"].values()))
            module = type(unet)._convert_ip_adapter_image_proj_to_diffusers(
                unet, self.state["image_proj"], low_cpu_mem_usage=False
            )
            self._projection = module.to(device=weights.device, dtype=weights.dtype).eval()
        return self._projection


def load_ip_adapter(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    field: str = "model",
) -> LoadedIPAdapter:
    """Read an IP-Adapter file (every tensor under ``image_proj.`` or ``ip_adapter.``)."""
    info = read_ip_adapter(path, field)
    state: dict[str, dict[str, torch.Tensor]] = {part: {} for part in _PARTS}
    for key, tensor in load_file(str(path)).items():
        part, _, name = key.partition(".")
        if part not in state:
            raise ValidationError(f"{path.name}: {key} is no IP-Adapter tensor", field=field)
        state[part][name] = tensor.to(device=device, dtype=dtype)
    return LoadedIPAdapter(state, info, path)


class LoadedImageEncoder:
    """A CLIP vision encoder (transformers' ``CLIPVisionModelWithProjection``) and its image preprocessing."""

    def __init__(self, module: Any, info: ImageEncoderInfo, path: Path) -> None:
        self.module = module
        self.info = info
        self.path = path
        transformers: Any = importlib.import_module("transformers")
        side = int(info.config["image_size"])
        self.processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The picture as the encoder reads it: shortest side to its size, centre-cropped, normalised."""
        values = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        weights = next(self.module.parameters())
        out: torch.Tensor = values.to(device=weights.device, dtype=weights.dtype)
        return out


def load_image_encoder(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    field: str = "image_encoder",
) -> LoadedImageEncoder:
    """Build the encoder from the file's own shapes and load every weight it needs (a missing one is a 422)."""
    info = read_image_encoder(path, field)
    transformers: Any = importlib.import_module("transformers")
    config = transformers.CLIPVisionConfig(**info.config)
    module = transformers.CLIPVisionModelWithProjection(config)
    stored = {
        k: v for k, v in load_file(str(path)).items() if k.startswith(("vision_model.", "visual_projection."))
    }
    result = module.load_state_dict(stored, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    extra = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or extra:
        shown = ", ".join((missing or extra)[:3])
        raise ValidationError(
            f"{path.name}: the file {'has no' if missing else 'has tensors the encoder does not use:'} {shown}",
            field=field,
        )
    module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedImageEncoder(module, info, path)


class _Given(torch.nn.Module):
    """The UNet's ``encoder_hid_proj`` during an IP-Adapter job: the image tokens arrive already projected."""

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        return tokens


@dataclass(slots=True)
class _Unit:
    index: int
    unit: ControlNetUnit
    adapter: LoadedIPAdapter
    encoder: LoadedImageEncoder
    cond: torch.Tensor  # [1, tokens, cross-attention width]
    uncond: torch.Tensor
    short_hash: str = ""

    def scale(self, step: int, steps: int, hires: bool, enable_hr: bool) -> float:
        unit = self.unit
        if unit.hr_option == ("Low res only" if hires else "High res only") or (hires and not enable_hr):
            return 0.0
        fraction = step / max(1, steps)
        inside = unit.guidance_start <= fraction <= unit.guidance_end
        return float(unit.weight) if inside else 0.0


@dataclass(slots=True)
class IPAdapterRun:
    """The IP-Adapter units of one job, attached to one UNet until :meth:`restore`."""

    unet: Any
    units: list[_Unit]
    enable_hr: bool
    saved: dict[str, Any]
    saved_type: Any
    saved_proj: Any
    processors: list[Any] = field(default_factory=list)
    hires: bool = False
    scales: list[list[float]] = field(default_factory=list)
    """The scales each step set (one list per UNet call, a scale per unit): for tests and benchmarks."""
    _rows: dict[tuple[int, bool, int], list[torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def attach(cls, unet: Any, units: list[_Unit], enable_hr: bool) -> IPAdapterRun:
        """Install the units' attention processors and the pass-through projection on ``unet``."""
        saved = dict(unet.attn_processors)
        cross = [name for name in saved if not name.endswith("attn1.processor")]
        for u in units:
            if u.adapter.info.layers != len(cross):
                raise ValidationError(
                    f"IP-Adapter {u.unit.model!r} patches {u.adapter.info.layers} cross-attention layers; "
                    f"this checkpoint's UNet has {len(cross)}",
                    field=f"controlnet.{u.index}.model",
                )
        built = type(unet)._convert_ip_adapter_attn_to_diffusers(
            unet, [u.adapter.state for u in units], low_cpu_mem_usage=False
        )
        weights = units[0].cond
        processors = []
        for name in cross:
            built[name] = built[name].to(device=weights.device, dtype=weights.dtype)
            processors.append(built[name])
        for name, processor in saved.items():
            if name not in cross:
                built[name] = processor  # the self-attentions keep the UNet's own processors
        run = cls(unet, units, enable_hr, saved, unet.config.encoder_hid_dim_type, unet.encoder_hid_proj)
        run.processors = processors
        unet.set_attn_processor(built)
        unet.encoder_hid_proj = _Given()
        unet.config.encoder_hid_dim_type = "ip_image_proj"  # as diffusers' own _load_ip_adapter_weights
        return run

    def restore(self) -> None:
        """The UNet back to its own processors, projection and config."""
        self.unet.set_attn_processor(dict(self.saved))
        self.unet.encoder_hid_proj = self.saved_proj
        self.unet.config.encoder_hid_dim_type = self.saved_type

    def begin_pass(self, hires: bool) -> None:
        """The next UNet calls belong to the first pass or to the hires pass (``hr_option``)."""
        self.hires = hires

    def step(
        self,
        unet: Any,
        step: int,
        steps: int,
        added: dict[str, Any] | None,
        groups: int,
        guided: bool,
        batch: int,
    ) -> dict[str, Any] | None:
        """The UNet's ``added_cond_kwargs`` for step ``step`` of ``steps``, with the image tokens of its
        ``groups`` row groups of ``batch`` rows (``guided``: the first group is the unconditional one); the
        processors' scales set for this step. Another UNet (the refiner's) gets ``added`` as it is."""
        if unet is not self.unet:
            return added
        scales = [u.scale(step, steps, self.hires, self.enable_hr) for u in self.units]
        for processor in self.processors:
            processor.scale = scales
        self.scales.append(scales)
        key = (groups, guided, batch)
        if key not in self._rows:
            self._rows[key] = [
                torch.cat(
                    [(u.uncond if guided and g == 0 else u.cond).expand(batch, -1, -1) for g in range(groups)]
                )
                for u in self.units
            ]
        return {**(added or {}), "image_embeds": self._rows[key]}

    def infotext(self) -> dict[str, str]:
        """The units' ``ControlNet N`` infotext entries, as the A1111 extension writes them."""
        return {f"ControlNet {u.index}": controlnet_infotext(u.unit, u.short_hash) for u in self.units}


class IPAdapters:
    """The IP-Adapters and image encoders an engine has loaded (the last ``keep`` used of each), found by
    registry name through ``adapters`` and ``encoders`` (a ``{name: path}`` mapping or a lookup returning
    None), and the run attached to a UNet for the current job (:attr:`active`)."""

    def __init__(
        self,
        adapters: Lookup | None,
        encoders: Lookup | None,
        device: torch.device,
        dtype: torch.dtype,
        hashes: HashCache | None = None,
        keep: int = 2,
    ) -> None:
        self.adapters = adapters
        self.encoders = encoders
        self.device = device
        self.dtype = dtype
        self.hashes = hashes
        self.pool = NetPool(keep=keep)
        self.encoder_pool = NetPool(keep=keep)
        self.active: IPAdapterRun | None = None
        self.last_scales: list[list[float]] = []
        """The scales of the last job's UNet calls (a scale per unit): for tests and benchmarks."""

    def loaded_models(self) -> list[str]:
        """``ip_adapter:<name>`` and ``image_encoder:<name>`` for the adapters and encoders held in memory."""
        return [f"ip_adapter:{n}" for n in self.pool.loaded_names()] + [
            f"image_encoder:{n}" for n in self.encoder_pool.loaded_names()
        ]

    def is_adapter(self, name: str) -> bool:
        """Whether a unit's ``model`` names an IP-Adapter (not a ControlNet)."""
        return lookup(self.adapters, name) is not None

    def units(self, spec: GenerationSpec) -> list[tuple[int, ControlNetUnit]]:
        """The enabled units of ``spec`` that are IP-Adapters."""
        return [(i, u) for i, u in spec.active_controlnet if self.is_adapter(u.model)]

    def others(self, spec: GenerationSpec) -> list[tuple[int, ControlNetUnit]]:
        """The enabled units of ``spec`` that are ControlNets."""
        return [(i, u) for i, u in spec.active_controlnet if not self.is_adapter(u.model)]

    def attach(
        self,
        spec: GenerationSpec,
        unet: Any,
        checkpoint_arch: str,
        image: Callable[[str, str], Image.Image],
    ) -> IPAdapterRun | None:
        """Embed each IP-Adapter unit's image once and attach the units to ``unet`` (None: there are none).
        ``image(ref, field)`` opens a reference."""
        self.detach()
        chosen = self.units(spec)
        if not chosen:
            return None
        prepared = []
        for index, unit in chosen:
            adapter = self._adapter(index, unit, checkpoint_arch)
            family = check_unit_module(unit.module, True, adapter.info.need, f"controlnet.{index}.module")
            encoder = self._encoder(index, unit, adapter, family)
            ref = unit.image or (spec.init_images[0] if spec.init_images else None)
            if ref is None:
                raise ValidationError("an IP-Adapter unit needs an image", field=f"controlnet.{index}.image")
            picture = image(ref, f"controlnet.{index}.image")
            cond, uncond = _embed(adapter, encoder, picture, unet)
            short = self.hashes.sha256(adapter.path)[:8] if self.hashes is not None else ""
            prepared.append(_Unit(index, unit, adapter, encoder, cond, uncond, short))
        self.active = IPAdapterRun.attach(unet, prepared, spec.enable_hr)
        return self.active

    def detach(self) -> None:
        """Give the UNet of the current run its own processors back (nothing attached: nothing to do)."""
        run, self.active = self.active, None
        if run is not None:
            run.restore()
            self.last_scales = run.scales

    def _adapter(self, index: int, unit: ControlNetUnit, checkpoint_arch: str) -> LoadedIPAdapter:
        field_name = f"controlnet.{index}.model"
        path = lookup(self.adapters, unit.model)
        if path is None or not path.is_file():
            raise ValidationError(f"unknown IP-Adapter {unit.model!r}", field=field_name)
        dtype = self.dtype

        def load(file: Path, device: str) -> LoadedIPAdapter:
            return load_ip_adapter(file, device=device, dtype=dtype, field=field_name)

        adapter: LoadedIPAdapter = self.pool.get(path, str(self.device), load, name=unit.model)
        if adapter.info.arch != checkpoint_arch:
            raise ValidationError(
                f"IP-Adapter {unit.model!r} is made for {adapter.info.arch.upper()}, the checkpoint is "
                f"{checkpoint_arch.upper()}",
                field=field_name,
            )
        return adapter

    def _encoder_path(self, index: int, unit: ControlNetUnit, need: str, family: str | None) -> Path:
        field_name = f"controlnet.{index}.image_encoder"
        if unit.image_encoder is not None:
            path = lookup(self.encoders, unit.image_encoder)
            if path is None or not path.is_file():
                raise ValidationError(f"unknown image encoder {unit.image_encoder!r}", field=field_name)
            return path
        if isinstance(self.encoders, Mapping):  # a table: the first by name that fits
            for name in sorted(self.encoders):
                candidate = Path(self.encoders[name])
                found = read_image_encoder(candidate, field_name).family
                if encoder_fits(need, found) and encoder_fits(family, found):
                    return candidate
        raise ValidationError(
            f"IP-Adapter {unit.model!r} reads a {need} image encoder, and none that fits is known here",
            field=field_name,
        )

    def _encoder(
        self, index: int, unit: ControlNetUnit, adapter: LoadedIPAdapter, family: str | None
    ) -> LoadedImageEncoder:
        field_name = f"controlnet.{index}.image_encoder"
        path = self._encoder_path(index, unit, adapter.info.need, family)
        dtype = self.dtype

        def load(file: Path, device: str) -> LoadedImageEncoder:
            return load_image_encoder(file, device=device, dtype=dtype, field=field_name)

        name = unit.image_encoder
        if name is None and isinstance(self.encoders, Mapping):  # chosen from the table: its name there
            name = next((n for n, p in self.encoders.items() if Path(p) == path), None)
        encoder: LoadedImageEncoder = self.encoder_pool.get(path, str(self.device), load, name=name)
        have = encoder.info.hidden_size if adapter.info.reads_hidden else encoder.info.projection_dim
        if have != adapter.info.image_width or not encoder_fits(family, encoder.info.family):
            raise ValidationError(
                f"image encoder {path.stem!r} ({encoder.info.family}) does not fit IP-Adapter {unit.model!r}, "
                f"which reads {adapter.info.need}",
                field=field_name,
            )
        return encoder


def _embed(
    adapter: LoadedIPAdapter, encoder: LoadedImageEncoder, picture: Image.Image, unet: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The picture's image tokens and the unconditional ones, [1, tokens, width] each."""
    pixels = encoder.pixels(picture)
    with torch.no_grad():
        if adapter.info.reads_hidden:
            both = torch.cat([torch.zeros_like(pixels), pixels])
            features = encoder.module(both, output_hidden_states=True).hidden_states[-2]
        else:
            embeds = encoder.module(pixels).image_embeds
            features = torch.cat([torch.zeros_like(embeds), embeds])
        projection = adapter.projection(unet)
        weights = next(projection.parameters())
        tokens: torch.Tensor = projection(features.to(device=weights.device, dtype=weights.dtype))
    return tokens[1:2], tokens[0:1]
