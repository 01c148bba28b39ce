"""IP-Adapter (image prompts) as data, free of torch so the API, the job service and the engine share it: the
A1111 ControlNet extension's IP-Adapter preprocessors ("modules") and the image encoder each one runs, the
image encoders' families by their widths, what an adapter needs from an encoder, and whether a registered
encoder fits a registered adapter.

An IP-Adapter reads one output of a CLIP vision encoder: the projected ``image_embeds`` (the plain adapters:
``ip-adapter_sd15``, ``ip-adapter_sdxl``) or the penultimate ``hidden_states`` (Plus and Full-face). So what
it needs is one width — the encoder's projection or its hidden size — and the registry records it in the
adapter's ``arch`` after the SD family: ``sd1-vit-h`` (``ip-adapter_sd15``, ``ip-adapter-plus_sd15``),
``sdxl-vit-bigg`` (``ip-adapter_sdxl``), ``sdxl-vit-h`` (``ip-adapter_sdxl_vit-h``,
``ip-adapter-plus_sdxl_vit-h``). An image encoder's ``arch`` is its family: ``vit-h``, ``vit-bigg``,
``vit-l``, or ``clip-<projection>-<hidden>`` for other widths (the tiny test encoders)."""

from __future__ import annotations

import re

from sdfleet.errors import ValidationError

__all__ = [
    "ENCODER_FAMILIES",
    "IP_MODULES",
    "adapter_arch",
    "adapter_family",
    "adapter_need",
    "check_unit_module",
    "encoder_family",
    "encoder_fits",
    "is_ip_module",
]

ENCODER_FAMILIES: dict[str, tuple[int, int]] = {
    "vit-h": (1024, 1280),  # OpenCLIP ViT-H/14 (h94/IP-Adapter models/image_encoder)
    "vit-bigg": (1280, 1664),  # OpenCLIP ViT-bigG/14 (h94/IP-Adapter sdxl_models/image_encoder)
    "vit-l": (768, 1024),  # OpenAI ViT-L/14
}
"""Image encoder family → (projection width, hidden size)."""

IP_MODULES: dict[str, str | None] = {
    "ip-adapter_clip_sd15": "vit-h",  # shown by the extension as ip-adapter_clip_h
    "ip-adapter_clip_h": "vit-h",
    "ip-adapter_clip_sdxl_plus_vith": "vit-h",
    "ip-adapter_clip_sdxl": "vit-bigg",  # shown as ip-adapter_clip_g
    "ip-adapter_clip_g": "vit-bigg",
    "ip-adapter-auto": None,  # the encoder the adapter needs
}
"""The extension's IP-Adapter preprocessors and the image encoder family each runs (None: the adapter's)."""

_CLIP = re.compile(r"^clip-(\d+)-(\d+)$")
_NEED = re.compile(r"^([ph])(\d+)$")
_SD = ("sd1", "sd2", "sdxl")


def encoder_family(projection: int, hidden: int) -> str:
    """The family name of an image encoder of these widths."""
    for name, widths in ENCODER_FAMILIES.items():
        if widths == (projection, hidden):
            return name
    return f"clip-{projection}-{hidden}"


def _widths(family: str) -> tuple[int, int] | None:
    if family in ENCODER_FAMILIES:
        return ENCODER_FAMILIES[family]
    m = _CLIP.match(family)
    return (int(m.group(1)), int(m.group(2))) if m else None


def adapter_need(reads_hidden: bool, width: int) -> str:
    """What an adapter needs from its encoder: the family whose projection (plain adapters) or hidden size
    (Plus, Full-face: ``reads_hidden``) is ``width``, else ``p<width>`` / ``h<width>``."""
    slot = 1 if reads_hidden else 0
    for name, widths in ENCODER_FAMILIES.items():
        if widths[slot] == width:
            return name
    return f"{'h' if reads_hidden else 'p'}{width}"


def adapter_arch(family: str, need: str) -> str:
    """An IP-Adapter's registry ``arch``: its SD family and the encoder it needs (``sd1-vit-h``)."""
    return f"{family}-{need}"


def adapter_family(arch: str | None) -> tuple[str | None, str | None]:
    """(SD family, encoder need) of an IP-Adapter's registry ``arch`` (``sdxl`` alone: the need unknown)."""
    if not arch:
        return None, None
    family, _, need = arch.partition("-")
    return (family if family in _SD else None), (need or None)


def encoder_fits(need: str | None, family: str | None) -> bool:
    """Whether an image encoder of ``family`` gives what an adapter that needs ``need`` reads (either
    unknown: yes)."""
    if not need or not family:
        return True
    have = _widths(family)
    if have is None:
        return True
    if need in ENCODER_FAMILIES:
        return have == ENCODER_FAMILIES[need]
    m = _NEED.match(need)
    if m is None:
        return _widths(need) in (None, have)
    return have[0 if m.group(1) == "p" else 1] == int(m.group(2))


def is_ip_module(module: str) -> bool:
    """Whether ``module`` is one of the extension's IP-Adapter preprocessors."""
    return module.strip().lower() in IP_MODULES


def check_unit_module(module: str, ip_adapter: bool, need: str | None, field: str) -> str | None:
    """A unit's module against its model: an IP-Adapter takes an IP-Adapter preprocessor (or ``none``, as
    ``ip-adapter-auto``) whose encoder gives what the adapter reads; a ControlNet takes none of them. A
    mismatch is a 422 naming ``field`` (the unit's ``module``). Returns the encoder family the module runs
    (None: the adapter's own, or a ControlNet unit)."""
    key = module.strip().lower()
    if not ip_adapter:
        if key in IP_MODULES:
            raise ValidationError(
                f"module {module!r} makes image prompts for an IP-Adapter; this unit's model is a ControlNet",
                field=field,
            )
        return None
    if key == "none":
        return None
    if key not in IP_MODULES:
        raise ValidationError(
            f"module {module!r} is no IP-Adapter preprocessor: an IP-Adapter unit takes "
            f"{', '.join(IP_MODULES)} (or none)",
            field=field,
        )
    family = IP_MODULES[key]
    if family is not None and not encoder_fits(need, family):
        raise ValidationError(
            f"module {module!r} runs a {family} image encoder; this IP-Adapter reads {need}",
            field=field,
        )
    return family
