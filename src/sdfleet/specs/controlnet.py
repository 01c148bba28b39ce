"""The ControlNet preprocessors ("modules") this server runs, as data: names (the A1111 ControlNet
extension's), the sliders each one reads, and the check of a unit's module at submit. The pictures are made
by :mod:`sdfleet.engine.controlnet.preprocess`; this table stays free of OpenCV and torch so the API and the
job service can use it."""

from __future__ import annotations

from dataclasses import dataclass

from sdfleet.errors import ValidationError

__all__ = ["MODULES", "Module", "module_named"]


@dataclass(frozen=True, slots=True)
class Module:
    """A preprocessor as the extension lists it: its name and the sliders it reads (``None``: not used):
    ``resolution`` (default, min, max, step), ``threshold_a``/``threshold_b`` (label, default, min, max,
    step)."""

    name: str
    resolution: tuple[int, int, int, int] | None = (512, 64, 2048, 8)
    threshold_a: tuple[str, float, float, float, float] | None = None
    threshold_b: tuple[str, float, float, float, float] | None = None


MODULES: dict[str, Module] = {
    "none": Module("none", resolution=None),
    "canny": Module(
        "canny",
        threshold_a=("Low Threshold", 100, 1, 255, 1),
        threshold_b=("High Threshold", 200, 1, 255, 1),
    ),
    "threshold": Module("threshold", threshold_a=("Binarization Threshold", 127, 0, 255, 1)),
    "invert": Module("invert", resolution=None),
}
"""The preprocessors this server runs, by the extension's names."""

_ALIASES = {"invert (from white bg & black line)": "invert"}


def module_named(name: str, field: str) -> Module:
    """The preprocessor ``name`` (the extension's names and aliases, any case), or a 422 naming ``field``."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODULES:
        raise ValidationError(
            f"module {name!r} is not a preprocessor this server runs (it runs {', '.join(MODULES)}); "
            "or send the control map itself as the image, with module 'none'",
            field=field,
        )
    return MODULES[key]
