"""The model registry: what checkpoints, LoRAs, VAEs and embeddings exist, where workers fetch
them from, and how they are verified. Jobs name models by registry name; an unknown name is a
4xx at submit time, never a failure on a worker."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sdfleet.a1111 import extract_extra_networks
from sdfleet.domain import GenerationSpec, ModelKind, ModelRecord
from sdfleet.errors import Conflict, NotFound, ValidationError
from sdfleet.specs.annotate import WEIGHTED, Annotator, find_module
from sdfleet.specs.ipadapter import adapter_family, check_unit_module, encoder_fits
from sdfleet.specs.upscale import UpscaleSpec, is_builtin_hires_upscaler, is_pixel_upscaler
from sdfleet.store import JobStore

_NAME = re.compile(r"^[\w][\w .()+\-\[\]/]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
REMOTE_SCHEMES = ("http", "https", "hf", "civitai", "s3")
ARCHS = ("sd1", "sd2", "sdxl")
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,15}$")
"""An upscaler's or face model's ``arch``: its network family (``esrgan``, ``srvgg``, or the name spandrel
gives one), read from the file at registration."""
NET_KINDS = (
    ModelKind.UPSCALER,
    ModelKind.FACE_RESTORER,
    ModelKind.FACE_DETECTOR,
    ModelKind.IMAGE_ENCODER,
    ModelKind.ANNOTATOR,
)
"""Kinds whose ``arch`` is a network family (an annotator's: the family of the modules it serves, ``midas``,
``depth_anything``), not an SD architecture."""
CONTROL_KINDS = (ModelKind.CONTROLNET, ModelKind.T2I_ADAPTER, ModelKind.IP_ADAPTER)
"""What a ControlNet unit's ``model`` may name: a ControlNet (or Union), a T2I-Adapter or an IP-Adapter
(as in A1111)."""
_IP_ARCH = re.compile(r"^(sd1|sd2|sdxl)(-[a-z0-9][a-z0-9_.\-]{0,10})?$")
"""An IP-Adapter's ``arch``: its SD family and, read from the file at registration, the image encoder it
reads (``sd1-vit-h``, ``sdxl-vit-bigg``; see :mod:`sdfleet.specs.ipadapter`)."""


def sha256_file(path: Path, on_progress: Callable[[int], None] | None = None) -> str:
    """The file's sha256, read in 8 MiB blocks (``on_progress`` gets the bytes of each block)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
            if on_progress is not None:
                on_progress(len(block))
    return digest.hexdigest()


def _hash_local(path: Path) -> tuple[str, int]:
    if not path.is_file():
        raise ValidationError(f"no such file: {path}", field="source")
    return sha256_file(path), path.stat().st_size


def check_source(source: str, *, allow_pickle: bool) -> str:
    """Accept a local path (absolute, or ``file://``), ``http(s)://``, ``hf://org/repo/file``,
    ``civitai://version/<id>`` or ``s3://bucket/key``; refuse pickle formats unless allowed."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = parts.path if scheme else source
        if not Path(path).is_absolute():
            raise ValidationError("a local source must be an absolute path", field="source")
    elif scheme == "hf":
        if len([p for p in (parts.netloc + parts.path).split("/") if p]) < 3:
            raise ValidationError("hf:// sources look like hf://org/repo/path/to/file", field="source")
    elif scheme == "civitai":
        if parts.netloc != "version" or not parts.path.strip("/").isdigit():
            raise ValidationError("civitai:// sources look like civitai://version/<id>", field="source")
    elif scheme in ("http", "https", "s3"):
        if not parts.netloc:
            raise ValidationError(f"{scheme}:// sources need a host", field="source")
    else:
        raise ValidationError(f"unsupported source scheme {scheme!r}", field="source")
    if parts.path.lower().endswith(PICKLE_SUFFIXES) and not allow_pickle:
        raise ValidationError(
            "pickle checkpoints (.ckpt, .pt, .bin, …) can run code when loaded: convert to .safetensors, "
            "or start the server with SDFLEET_ALLOW_PICKLE=true",
            field="source",
        )
    return source


@dataclass(slots=True, frozen=True)
class ModelUse:
    """What a spec needs from the registry: the architecture it pins, every model it names, and the image
    encoder chosen for each IP-Adapter unit that named none (unit index → registry name)."""

    arch: str | None
    names: tuple[str, ...]
    image_encoders: Mapping[int, str] = dataclass_field(default_factory=dict)

    def apply(self, spec: GenerationSpec) -> GenerationSpec:
        """``spec`` with the chosen image encoders written into its units (so workers fetch them)."""
        if not self.image_encoders:
            return spec
        units = [
            u.model_copy(update={"image_encoder": self.image_encoders[i]}) if i in self.image_encoders else u
            for i, u in enumerate(spec.controlnet)
        ]
        return spec.model_copy(update={"controlnet": units})


class ModelService:
    """Create, list, remove registry entries; resolve the models a job names."""

    def __init__(
        self, store: JobStore, *, allow_pickle: bool = False, clock: Callable[[], float] = time.time
    ):
        self.store = store
        self.allow_pickle = allow_pickle
        self.clock = clock

    async def add(self, model: ModelRecord, *, hash_local: bool = True) -> ModelRecord:
        """Register (or replace) a model. Remote sources need sha256 and size; local files get
        theirs computed (and checked, when given)."""
        if not _NAME.match(model.name) or ".." in model.name or ":" in model.name:
            raise ValidationError(
                "name: letters, digits, space and . _ - ( ) [ ] + / (no '..' or ':')", field="name"
            )
        if model.kind == ModelKind.IP_ADAPTER:
            if model.arch is not None and not _IP_ARCH.match(model.arch):
                raise ValidationError(
                    "arch of an IP-Adapter is its SD family and the image encoder it reads: sd1, sdxl-vit-h, …",
                    field="arch",
                )
        elif model.kind in NET_KINDS:
            if model.arch is not None and not _FAMILY.match(model.arch):
                raise ValidationError(
                    "arch of an upscaler, face model or annotator is its network family: 1–16 of a-z 0-9 _ . -",
                    field="arch",
                )
            if model.kind == ModelKind.ANNOTATOR and model.arch is None:
                families = sorted({a.family for a in WEIGHTED.values()})
                raise ValidationError(
                    f"an annotator needs its family as arch: one of {', '.join(families)}", field="arch"
                )
        elif model.arch is not None and model.arch not in ARCHS:
            raise ValidationError(f"arch must be one of {', '.join(ARCHS)}", field="arch")
        if model.scale is not None and model.kind != ModelKind.UPSCALER:
            raise ValidationError("only upscalers have a scale", field="scale")
        if model.kind == ModelKind.UPSCALER and is_pixel_upscaler(model.name):
            raise ValidationError(
                f"{model.name!r} is the name of a built-in resize: choose another name", field="name"
            )
        check_source(model.source, allow_pickle=self.allow_pickle)
        if model.sha256 is not None:
            model.sha256 = model.sha256.lower()
            if not _SHA256.match(model.sha256):
                raise ValidationError("sha256 must be 64 hex digits", field="sha256")
        scheme = urlsplit(model.source).scheme.lower()
        if scheme in REMOTE_SCHEMES:
            if model.sha256 is None or model.size is None:
                raise ValidationError(
                    "remote sources need sha256 and size, so workers can verify them",
                    field="sha256" if model.sha256 is None else "size",
                )
        elif hash_local:
            path = Path(urlsplit(model.source).path if scheme == "file" else model.source)
            digest, size = await asyncio.to_thread(_hash_local, path)
            if model.sha256 is not None and model.sha256 != digest:
                raise ValidationError(f"sha256 does not match the file ({digest})", field="sha256")
            model.sha256, model.size = digest, size
        model.created_at = model.created_at or self.clock()
        await self.store.write(lambda tx: tx.upsert_model(model))
        return model

    async def get(self, name: str) -> ModelRecord:
        found = await self.store.read(lambda tx: tx.get_models([name]))
        if name not in found:
            raise NotFound(f"no model {name!r} in the registry", field="name")
        return found[name]

    async def list(self, kind: ModelKind | None = None) -> list[ModelRecord]:
        return await self.store.read(lambda tx: tx.list_models(kind))

    async def face_restorer(self, family: str | None = None) -> str | None:
        """The registered face restorer a job that names none uses: of ``family`` if one is registered
        (A1111's ``face_restoration_model``), else CodeFormer, else GFPGAN, else any; first by name."""
        restorers = await self.list(ModelKind.FACE_RESTORER)
        for wanted in (family, "codeformer", "gfpgan", None):
            found = sorted(m.name for m in restorers if wanted is None or m.arch == wanted)
            if found:
                return found[0]
        return None

    async def remove(self, name: str) -> None:
        if not await self.store.write(lambda tx: tx.delete_model(name)):
            raise NotFound(f"no model {name!r} in the registry", field="name")

    async def resolve(self, spec: GenerationSpec, field_prefix: str = "params.") -> ModelUse:
        """Check that every model the spec names is registered with the right kind and a
        compatible architecture; return the architecture the job needs."""
        wanted: list[tuple[str, ModelKind, str]] = []
        if spec.model:
            wanted.append((spec.model, ModelKind.CHECKPOINT, "model"))
        if spec.refiner_checkpoint:
            wanted.append((spec.refiner_checkpoint, ModelKind.CHECKPOINT, "refiner_checkpoint"))
        if spec.vae:
            wanted.append((spec.vae, ModelKind.VAE, "vae"))
        if spec.enable_hr and spec.hr_upscaler and not is_builtin_hires_upscaler(spec.hr_upscaler):
            wanted.append((spec.hr_upscaler, ModelKind.UPSCALER, "hr_upscaler"))
        if spec.restore_faces and spec.face_restorer:
            wanted.append((spec.face_restorer, ModelKind.FACE_RESTORER, "face_restorer"))
        for i, lora in enumerate(spec.loras):
            wanted.append((lora.name, ModelKind.LORA, f"loras.{i}.name"))
        for i, unit in spec.active_controlnet:
            find_module(unit.module, f"{field_prefix}controlnet.{i}.module")
            wanted.append((unit.model, ModelKind.CONTROLNET, f"controlnet.{i}.model"))
        for field in ("prompt", "negative_prompt"):
            _, tags = extract_extra_networks(getattr(spec, field))
            wanted += [(tag.name, ModelKind.LORA, field) for tag in tags if tag.kind in ("lora", "lyco")]
        if not wanted:
            return ModelUse(arch=None, names=())
        found = await self.store.read(lambda tx: tx.get_models([w[0] for w in wanted]))
        arch: str | None = None
        for name, kind, field in wanted:
            model = found.get(name)
            if model is None:
                raise ValidationError(
                    f"no {kind.value} named {name!r} in the registry", field=field_prefix + field
                )
            if model.kind != kind and not (kind == ModelKind.CONTROLNET and model.kind in CONTROL_KINDS):
                raise ValidationError(
                    f"{name!r} is a {model.kind.value}, not a {kind.value}", field=field_prefix + field
                )
            if model.kind == ModelKind.CHECKPOINT and field == "model":
                arch = model.arch
        if arch is not None:
            for name, kind, field in wanted:
                other = found[name].arch
                if found[name].kind == ModelKind.IP_ADAPTER:  # sd1-vit-h: the SD family, then the encoder
                    other = adapter_family(other)[0]
                if kind in NET_KINDS:  # an upscaler's or face model's arch is its net family: any checkpoint
                    continue
                if other is not None and other != arch and field != "refiner_checkpoint":
                    raise ValidationError(
                        f"{name!r} is made for {other.upper()}, the checkpoint is {arch.upper()}",
                        field=field_prefix + field,
                    )
        encoders = await self._image_encoders(spec, found, field_prefix)
        names = [
            *(w[0] for w in wanted),
            *(u.image_encoder for _, u in spec.active_controlnet if u.image_encoder),
        ]
        return ModelUse(
            arch=arch, names=tuple(dict.fromkeys([*names, *encoders.values()])), image_encoders=encoders
        )

    async def _image_encoders(
        self, spec: GenerationSpec, found: Mapping[str, ModelRecord], field_prefix: str
    ) -> dict[int, str]:
        """Check each unit's module against its model (an IP-Adapter preprocessor for an IP-Adapter, none for
        a ControlNet) and each IP-Adapter unit's image encoder: the one it names must be a registered
        ``image_encoder`` that gives what the adapter reads; a unit naming none gets the first by name that
        does (none registered that fits: a 422 naming the unit's model)."""
        chosen: dict[int, str] = {}
        registered: list[ModelRecord] | None = None
        asked = [u.image_encoder for _, u in spec.active_controlnet if u.image_encoder]
        named = await self.store.read(lambda tx: tx.get_models(asked)) if asked else {}
        for i, unit in spec.active_controlnet:
            model = found[unit.model]
            ip = model.kind == ModelKind.IP_ADAPTER
            need = adapter_family(model.arch)[1] if ip else None
            at = f"{field_prefix}controlnet.{i}"
            family = check_unit_module(unit.module, ip, need, f"{at}.module")
            if not ip:
                continue
            if unit.image_encoder is not None:
                encoder = named.get(unit.image_encoder)
                if encoder is None or encoder.kind != ModelKind.IMAGE_ENCODER:
                    raise ValidationError(
                        f"no image_encoder named {unit.image_encoder!r} in the registry",
                        field=f"{at}.image_encoder",
                    )
                if not (encoder_fits(need, encoder.arch) and encoder_fits(family, encoder.arch)):
                    raise ValidationError(
                        f"image encoder {encoder.name!r} ({encoder.arch}) does not give what IP-Adapter "
                        f"{unit.model!r} reads ({need or family})",
                        field=f"{at}.image_encoder",
                    )
                continue
            if registered is None:
                registered = await self.list(ModelKind.IMAGE_ENCODER)
            fits = sorted(
                m.name for m in registered if encoder_fits(need, m.arch) and encoder_fits(family, m.arch)
            )
            if not fits:
                raise ValidationError(
                    f"IP-Adapter {unit.model!r} reads a {need or family or 'CLIP'} image encoder, and no "
                    "registered image_encoder gives it: register one (sdfleet models add --kind image_encoder)",
                    field=f"{at}.model",
                )
            chosen[i] = fits[0]
        return chosen


async def resolve_annotator(store: JobStore, module: Annotator, field: str) -> ModelRecord:
    """The registered ``annotator`` a module with weights runs: of the module's family, the first by name; a 422
    naming ``field`` when none is registered."""
    found = await store.read(lambda tx: tx.list_models(ModelKind.ANNOTATOR))
    match = sorted((m for m in found if m.arch == module.family), key=lambda m: m.name)
    if not match:
        raise ValidationError(
            f"module {module.name!r} needs an annotator model of family {module.family!r} and none is "
            f"registered (sdfleet models add NAME FILE.onnx --kind annotator --arch {module.family})",
            field=field,
        )
    return match[0]


LIGHT_UPSCALERS = frozenset({"srvgg"})
"""Upscaler families cheap enough for CPU workers (Real-ESRGAN Compact); every other family — and one
whose family is not known — needs a GPU-class worker (``Feature.GPU``)."""
FACE_FIELDS = (("gfpgan_visibility", "gfpgan"), ("codeformer_visibility", "codeformer"))


@dataclass(slots=True, frozen=True)
class UpscaleUse:
    """What an upscale job needs from the registry: a GPU-class worker or not, the face restorers its
    visibilities use (none registered: none), and which requested restorers are missing."""

    needs_gpu: bool
    face_restorers: dict[str, str]
    """Family (``gfpgan``, ``codeformer``) → the registered restorer's name."""
    missing_restorers: tuple[str, ...]
    face_detector: str | None = None
    """A registered face detector (the first by name) when the job restores faces."""


async def resolve_upscale(store: JobStore, spec: UpscaleSpec, field_prefix: str = "params.") -> UpscaleUse:
    """Check an upscale job's upscalers (a built-in resize, or a registered ``upscaler``: 422 naming the
    field otherwise) and find the face restorers its visibilities ask for (a registered
    ``face_restorer`` of family ``gfpgan`` / ``codeformer``; the first by name)."""
    fields = [("upscaler_1", spec.upscaler_1)]
    if spec.extras_upscaler_2_visibility > 0:
        fields.append(("upscaler_2", spec.upscaler_2))
    wanted = [(f, n) for f, n in fields if not is_pixel_upscaler(n)]
    found = await store.read(lambda tx: tx.get_models([n for _, n in wanted])) if wanted else {}
    needs_gpu = False
    for field, name in wanted:
        model = found.get(name)
        if model is None:
            raise ValidationError(
                f"no upscaler named {name!r}: a registered upscaler or one of None, Lanczos, Nearest",
                field=field_prefix + field,
            )
        if model.kind != ModelKind.UPSCALER:
            raise ValidationError(
                f"{name!r} is a {model.kind.value}, not an upscaler", field=field_prefix + field
            )
        needs_gpu = needs_gpu or model.arch not in LIGHT_UPSCALERS
    asked = [family for field, family in FACE_FIELDS if getattr(spec, field) > 0]
    restorers: dict[str, str] = {}
    missing: list[str] = []
    detector: str | None = None
    if asked:
        faces = await store.read(lambda tx: tx.list_models(ModelKind.FACE_RESTORER))
        detectors = await store.read(lambda tx: tx.list_models(ModelKind.FACE_DETECTOR))
        detector = min((d.name for d in detectors), default=None)
        for family in asked:
            match = sorted(m.name for m in faces if m.arch == family)
            if match:
                restorers[family] = match[0]
            else:
                missing.append(family)
    return UpscaleUse(
        needs_gpu=needs_gpu,
        face_restorers=restorers if restorers else {},
        missing_restorers=tuple(missing),
        face_detector=detector if restorers else None,
    )


async def resolve_training(
    store: JobStore, base_model: str, name: str | None, field_prefix: str, tenant: str
) -> str | None:
    """Check a training job's models: ``base_model`` must be a registered checkpoint, and the LoRA's
    ``name`` must not be taken by a model of another kind (422) or by a LoRA ``tenant`` does not own
    (409: an admin's or another tenant's; a LoRA the tenant trained is replaced when the job
    succeeds). Returns the base model's architecture."""
    names = [base_model] + ([name] if name else [])
    found = await store.read(lambda tx: tx.get_models(names))
    base = found.get(base_model)
    if base is None:
        raise ValidationError(
            f"no checkpoint named {base_model!r} in the registry", field=f"{field_prefix}base_model"
        )
    if base.kind != ModelKind.CHECKPOINT:
        raise ValidationError(
            f"{base_model!r} is a {base.kind.value}, not a checkpoint", field=f"{field_prefix}base_model"
        )
    if name and name in found and found[name].kind != ModelKind.LORA:
        raise ValidationError(
            f"{name!r} is already a {found[name].kind.value} in the registry: choose another name",
            field=f"{field_prefix}name",
        )
    if name and (clash := lora_name_clash(found.get(name), tenant)) is not None:
        raise Conflict(f"{clash}: choose another name", field=f"{field_prefix}name")
    return base.arch


def named_models(params: Mapping[str, Any]) -> list[str]:
    """Every registry name a stored job's params name (checkpoint, refiner, VAE, LoRAs of the spec
    and ``<lora:…>`` tags of the prompts), in order, once each — what a worker must fetch. The
    names were checked against the registry when the job was submitted (:meth:`ModelService.resolve`)."""
    names: list[str] = []
    for key in ("model", "refiner_checkpoint", "vae", "base_model"):
        value = params.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    # an upscale job's upscaler models (not the built-in resizes); upscaler 2 only when it is blended in
    upscalers = [params.get("upscaler_1")]
    if float(params.get("extras_upscaler_2_visibility") or 0) > 0:
        upscalers.append(params.get("upscaler_2"))
    names += [u for u in upscalers if isinstance(u, str) and u and not is_pixel_upscaler(u)]
    restorer = params.get("face_restorer")  # a generation's face restorer
    if params.get("restore_faces") and isinstance(restorer, str) and restorer:
        names.append(restorer)
    hires = params.get("hr_upscaler")  # a hires fix's registered upscaler
    if params.get("enable_hr") and isinstance(hires, str) and hires and not is_builtin_hires_upscaler(hires):
        names.append(hires)
    restorers = params.get("face_restorers")
    for name in restorers.values() if isinstance(restorers, Mapping) else ():
        if isinstance(name, str):
            names.append(name)
    if isinstance(params.get("face_detector"), str) and params["face_detector"]:
        names.append(params["face_detector"])
    for lora in params.get("loras") or ():
        if isinstance(lora, Mapping) and isinstance(lora.get("name"), str):
            names.append(lora["name"])
    for unit in params.get("controlnet") or ():  # the enabled ControlNet units' nets
        if isinstance(unit, Mapping) and unit.get("enabled", True) and isinstance(unit.get("model"), str):
            names.append(unit["model"])
            if isinstance(unit.get("image_encoder"), str):  # an IP-Adapter unit's CLIP vision encoder
                names.append(unit["image_encoder"])
    for key in ("prompt", "negative_prompt"):
        text = params.get(key)
        if isinstance(text, str) and "<" in text:
            _, tags = extract_extra_networks(text)
            names += [tag.name for tag in tags if tag.kind in ("lora", "lyco")]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- provenance
_TRAINED_DESCRIPTION = re.compile(r"^trained by job \S+ on ")


@dataclass(slots=True, frozen=True)
class TrainedBy:
    """Which tenant and job trained a LoRA registered by a ``train_lora`` job."""

    tenant: str
    job_id: str


def trained_by(model: ModelRecord) -> TrainedBy | None:
    """The provenance of a LoRA trained here, read from its blob key
    (``blob:outputs/<tenant>/<job id>/<file>``; admins cannot register ``blob:`` sources)."""
    if not model.source.startswith("blob:outputs/"):
        return None
    parts = model.source.removeprefix("blob:").split("/")
    if len(parts) < 4 or not all(parts[1:]):
        return None
    return TrainedBy(tenant="/".join(parts[1:-2]), job_id=parts[-2])


def may_see_provenance(model: ModelRecord, tenant: str, *, is_admin: bool) -> bool:
    """Sources and training provenance are for admins and the model's owner (the tenant that
    trained it) only; everyone else sees the model without them."""
    if is_admin:
        return True
    origin = trained_by(model)
    return origin is not None and origin.tenant == tenant


def public_description(model: ModelRecord) -> str:
    """The description without training provenance (older trained LoRAs name their job in it)."""
    if trained_by(model) is None:
        return model.description
    return _TRAINED_DESCRIPTION.sub("trained on ", model.description)


# ---------------------------------------------------------------- names of trained LoRAs
def lora_name_clash(existing: ModelRecord | None, tenant: str) -> str | None:
    """Why a ``train_lora`` job of ``tenant`` may not register its LoRA under ``existing``'s name
    (None: the name is free, or is a LoRA this tenant trained, which it may replace). A job never
    replaces a model it does not own: one an admin registered or another tenant trained."""
    if existing is None:
        return None
    if existing.kind != ModelKind.LORA:
        return f"{existing.name!r} is already a {existing.kind.value} in the registry"
    origin = trained_by(existing)
    if origin is None or origin.tenant != tenant:
        return f"{existing.name!r} is a LoRA you do not own (shared in the registry)"
    return None


def lora_registration_name(
    lookup: Callable[[list[str]], Mapping[str, ModelRecord]], name: str, tenant: str, job_id: str
) -> tuple[str | None, str | None]:
    """The name a finished training job registers its LoRA under, and why it is not the requested
    one (None when it is). When the name was taken after submit by a model the tenant does not own,
    the LoRA is registered as ``<name>-<8 hex of the job id>`` (or ``<name>-<job id>``): the trained
    weights stay usable, the other model is untouched, and the job's result names both. Should
    those be taken too, the name is None: the LoRA is not registered (the job's result says why)."""
    problem = lora_name_clash(lookup([name]).get(name), tenant)
    if problem is None:
        return name, None
    for candidate in (f"{name[:190]}-{job_id[-8:]}", f"{name[:160]}-{job_id}"):
        if lora_name_clash(lookup([candidate]).get(candidate), tenant) is None:
            return candidate, f"{problem}: registered as {candidate!r} instead"
    return None, f"{problem}, and so are the names derived from it: the LoRA was not registered"
