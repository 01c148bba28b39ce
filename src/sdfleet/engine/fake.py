"""FakeEngine: a test double of the engine, for tests and fleet simulation only — never a model.

It draws a deterministic picture from each image's seed (a seeded gradient with a few shapes, the
words "FAKE ENGINE" and the first words of the prompt), sleeps a configurable time per step,
reports progress and honours interrupts exactly like a real engine, and can be told to fail so a
bad node can be simulated. Its infotext says ``Engine: "fake (test double, not a model)"`` (quoted,
as A1111 quotes values that contain commas).
"""

from __future__ import annotations

import base64
import colorsys
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from sdfleet.a1111 import extract_extra_networks
from sdfleet.domain import GenerationSpec, JobKind
from sdfleet.engine.base import (
    EngineCapabilities,
    GeneratedImage,
    GenerationResult,
    OnStep,
    ShouldStop,
    StepInfo,
    open_input_image,
)
from sdfleet.errors import EngineError, Interrupted, InvalidInput, ValidationError

ENGINE_LABEL = "fake (test double, not a model)"
PADDING_KEY = "fake-padding"
_SEED_MAX = 2**32 - 1
_PREVIEW_SIZE = 64


class FakeEngine:
    """A TEST DOUBLE of :class:`sdfleet.engine.base.Engine`: no model, no GPU, no real diffusion.

    Use it to test the job system and to simulate large fleets on one machine; it is never the
    default engine.

    - Images are deterministic functions of (seed, prompt, size): the same spec and seed give the
      same pixels. Seed ``-1`` draws a random one; image ``i`` of ``batch_size × n_iter`` uses
      ``seed + i`` (A1111's rule).
    - Every step sleeps ``step_seconds`` and calls ``on_step``; ``should_stop()`` is checked before
      every step and raises :class:`sdfleet.errors.Interrupted` when true.
    - ``fail_every=N`` makes every N-th ``generate`` call raise an :class:`EngineError` (``fail_with``
      ``"retryable"`` or ``"fatal"``, or a given error) after ``fail_at_step`` steps.
    - ``padding_bytes`` attaches that many filler bytes to each image (``image.info["fake-padding"]``,
      written into the PNG as a text chunk by the worker), to simulate multi-MB outputs.
    - ``load_seconds`` is slept whenever a model not in the last ``cache_size`` used ones is asked
      for, to simulate model loads (``loaded_models()`` reports that cache).
    - ``lookup(kind, name)``, when given, is asked for the local file of every model a spec names
      (checkpoint unless it is the default, refiner, VAE, LoRAs of the spec and of ``<lora:…>``
      tags), as the real engine does with the worker's model cache; an unknown name is a
      :class:`ValidationError`, and ``result.info["model_files"]`` lists them (``name: file, …``).
    """

    name = "fake"

    def __init__(
        self,
        step_seconds: float = 0.02,
        *,
        model: str | None = None,
        fail_every: int = 0,
        fail_with: Literal["retryable", "fatal"] | EngineError = "retryable",
        fail_at_step: int = 0,
        padding_bytes: int = 0,
        load_seconds: float = 0.0,
        cache_size: int = 4,
        max_pixels: int = 4 * 1024 * 1024,
        lookup: Callable[[str, str], Path | None] | None = None,
    ) -> None:
        if step_seconds < 0:
            raise ValueError("step_seconds must be >= 0")
        if fail_every < 0 or fail_at_step < 0 or padding_bytes < 0 or cache_size < 1:
            raise ValueError("fail_every, fail_at_step and padding_bytes must be >= 0, cache_size >= 1")
        self.step_seconds = step_seconds
        self.default_model = model or "fake"
        self.fail_every = fail_every
        self.fail_with = fail_with
        self.fail_at_step = fail_at_step
        self.padding_bytes = padding_bytes
        self.load_seconds = load_seconds
        self.cache_size = cache_size
        self.max_pixels = max_pixels
        self.lookup = lookup
        self.calls = 0
        self._lock = threading.Lock()
        self._models: OrderedDict[str, None] = OrderedDict({self.default_model: None})

    # ------------------------------------------------------------------ Engine protocol
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            # upscale jobs run the real extras pipeline (torch); only SD generation is faked
            kinds=(JobKind.TXT2IMG.value, JobKind.IMG2IMG.value, JobKind.UPSCALE.value),
            archs=("sd1", "sd2", "sdxl"),
            max_pixels=self.max_pixels,
            features=("lora", "inpaint", "hires"),
            device="cpu",
            gpu_name="FakeEngine (test double)",
            gpu_memory_mb=0,
        )

    def loaded_models(self) -> list[str]:
        with self._lock:
            return list(reversed(self._models))

    def generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult:
        with self._lock:
            self.calls += 1
            fails = self.fail_every > 0 and self.calls % self.fail_every == 0
        started = time.monotonic()
        files = self._files(spec)
        self._load(spec)
        base_seed = spec.seed if spec.seed != -1 else random.randint(0, _SEED_MAX)
        base_subseed = spec.subseed if spec.subseed != -1 else random.randint(0, _SEED_MAX)
        width, height = spec.output_size()
        init = (
            _decode_init(spec.init_images[0], width, height)
            if kind == JobKind.IMG2IMG and spec.init_images
            else None
        )
        mask = (
            _decode_mask(spec.mask, width, height, spec.inpainting_mask_invert, spec.mask_blur)
            if init is not None and spec.mask
            else None
        )
        hr_steps = (spec.hr_second_pass_steps or spec.steps) if spec.enable_hr else 0
        per_iter = spec.steps + hr_steps
        total = per_iter * spec.n_iter
        step = 0
        images: list[GeneratedImage] = []
        for it in range(spec.n_iter):
            for _ in range(per_iter):
                if fails and step >= self.fail_at_step:
                    raise self._failure()
                if should_stop():
                    raise Interrupted(f"stopped at step {step} of {total}")
                if self.step_seconds:
                    time.sleep(self.step_seconds)
                step += 1
                preview = None
                if spec.preview_every and step % spec.preview_every == 0:
                    preview = self._preview(base_seed + it * spec.batch_size, spec, step / total)
                on_step(StepInfo(step=step, total=total, preview=preview))
            for b in range(spec.batch_size):
                index = it * spec.batch_size + b
                seed = base_seed + index
                subseed = base_subseed + index
                image = render(seed, spec.prompt, width, height)
                if init is not None:  # img2img: keep (1 - strength) of the input, visibly
                    image = Image.blend(init, image, spec.denoising_strength)
                    if mask is not None:  # inpainting: only the masked area changes
                        image = Image.composite(image, init, mask)
                if self.padding_bytes:
                    image.info[PADDING_KEY] = _filler(seed, self.padding_bytes)
                images.append(
                    GeneratedImage(
                        image=image,
                        seed=seed,
                        subseed=subseed,
                        infotext=self.infotext(spec, seed, subseed, width, height),
                    )
                )
        if fails:  # fail_at_step beyond the last step: fail after all the work
            raise self._failure()
        info: dict[str, object] = {"engine": self.name, "steps": total, "seconds": time.monotonic() - started}
        if files:
            info["model_files"] = ", ".join(f"{name}: {file}" for name, file in files.items())
        return GenerationResult(images=images, info=info)

    # ------------------------------------------------------------------ helpers
    def infotext(self, spec: GenerationSpec, seed: int, subseed: int, width: int, height: int) -> str:
        """A1111-style generation parameters, clearly marked as coming from the test double."""
        params: list[tuple[str, object]] = [
            ("Steps", spec.steps),
            ("Sampler", spec.sampler_name),
            ("Schedule type", spec.scheduler.capitalize()),
            ("CFG scale", f"{spec.cfg_scale:g}"),
            ("Seed", seed),
            ("Size", f"{width}x{height}"),
            ("Model", spec.model or self.default_model),
        ]
        if spec.subseed_strength:
            params += [("Variation seed", subseed), ("Variation seed strength", spec.subseed_strength)]
        if spec.clip_skip > 1:
            params.append(("Clip skip", spec.clip_skip))
        if spec.enable_hr:
            params += [
                ("Hires upscale", f"{spec.hr_scale:g}"),
                ("Hires steps", spec.hr_second_pass_steps),
                ("Hires upscaler", spec.hr_upscaler),
                ("Denoising strength", spec.hr_denoising_strength),
            ]
        params.append(("Engine", ENGINE_LABEL))
        prompt = spec.prompt + "".join(f" <lora:{lo.name}:{lo.weight:g}>" for lo in spec.loras)
        lines = [prompt]
        if spec.negative_prompt:
            lines.append(f"Negative prompt: {spec.negative_prompt}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in params))
        return "\n".join(lines)

    def _failure(self) -> EngineError:
        if isinstance(self.fail_with, EngineError):
            return self.fail_with
        retryable = self.fail_with == "retryable"
        kind = "retryable" if retryable else "fatal"
        return EngineError(f"fake engine: injected {kind} failure (call {self.calls})", retryable=retryable)

    def _files(self, spec: GenerationSpec) -> dict[str, str]:
        """``{name: file name}`` of the models the spec names, through ``lookup`` (if any)."""
        if self.lookup is None:
            return {}
        wanted: list[tuple[str, str, str]] = []
        if spec.model and spec.model != self.default_model:
            wanted.append(("checkpoint", spec.model, "model"))
        if spec.refiner_checkpoint:
            wanted.append(("checkpoint", spec.refiner_checkpoint, "refiner_checkpoint"))
        if spec.vae and spec.vae.lower() not in ("automatic", "none"):
            wanted.append(("vae", spec.vae, "vae"))
        wanted += [("lora", lo.name, "loras") for lo in spec.loras]
        for text in (spec.prompt, spec.negative_prompt):
            _, tags = extract_extra_networks(text)
            wanted += [("lora", t.name, "loras") for t in tags if t.kind in ("lora", "lyco")]
        files: dict[str, str] = {}
        for kind, name, field in wanted:
            path = self.lookup(kind, name)
            if path is None or not path.is_file():
                raise ValidationError(f"unknown {kind} {name!r}", field=field)
            files[name] = path.name
        return files

    def _load(self, spec: GenerationSpec) -> None:
        wanted = [spec.model or self.default_model, *(f"lora:{lo.name}" for lo in spec.loras)]
        with self._lock:
            missing = [m for m in wanted if m not in self._models]
            for m in wanted:
                self._models[m] = None
                self._models.move_to_end(m)
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
        if missing and self.load_seconds:
            time.sleep(self.load_seconds * len(missing))

    @staticmethod
    def _preview(seed: int, spec: GenerationSpec, fraction: float) -> Image.Image:
        w, h = spec.output_size()
        scale = _PREVIEW_SIZE / max(w, h)
        small = render(seed, "", max(8, round(w * scale)), max(8, round(h * scale)), text=False)
        return small.filter(ImageFilter.GaussianBlur(radius=4 * (1 - fraction)))


def render(seed: int, prompt: str, width: int, height: int, *, text: bool = True) -> Image.Image:
    """Draw the deterministic picture of one seed: a two-colour gradient, soft shapes, a label."""
    rng = random.Random(seed)
    hue = rng.random()
    c1 = _hsv(hue, 0.55 + 0.3 * rng.random(), 0.85)
    c2 = _hsv((hue + 0.25 + 0.5 * rng.random()) % 1.0, 0.6, 0.35 + 0.3 * rng.random())
    mask = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.Resampling.BICUBIC)
    mask = mask.crop((48, 48, 208, 208)).resize((width, height), Image.Resampling.BILINEAR)
    image = Image.composite(
        Image.new("RGB", (width, height), c1), Image.new("RGB", (width, height), c2), mask
    )
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(4, 9)):
        r = rng.uniform(0.05, 0.3) * min(width, height)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        colour = (*_hsv(rng.random(), 0.5, 0.95), rng.randint(50, 120))
        if rng.random() < 0.6:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.regular_polygon((x, y, r), rng.randint(3, 7), rotation=rng.uniform(0, 360), fill=colour)
    image = Image.alpha_composite(image.convert("RGBA"), layer.filter(ImageFilter.GaussianBlur(2)))
    if text:
        _label(image, prompt, seed)
    return image.convert("RGB")


def _label(image: Image.Image, prompt: str, seed: int) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    size = max(8, min(width, height) // 14)
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(6, size * 2 // 3))
    words = " ".join(prompt.split()[:6])
    lines = [("FAKE ENGINE", font), (words, small), (f"seed {seed}", small)]
    y = max(2, height // 20)
    for line, f in lines:
        if not line:
            continue
        x = max(2, width // 20)
        draw.text((x + 1, y + 1), line, font=f, fill=(0, 0, 0, 160))
        draw.text((x, y), line, font=f, fill=(255, 255, 255, 230))
        box = draw.textbbox((x, y), line, font=f)
        y = int(box[3]) + max(2, size // 4)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _filler(seed: int, size: int) -> str:
    unit = f"sdfleet fake engine padding, seed {seed}; "
    return (unit * (size // len(unit) + 1))[:size]


def _quote(value: object) -> str:
    text = str(value)
    if any(c in text for c in ',:"\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def _decode_init(value: str, width: int, height: int, field: str = "init_images") -> Image.Image:
    """An init image given as a ``data:`` URL or plain base64 (what the worker hands engines),
    decoded as the real engine decodes it: :class:`InvalidInput` naming ``field`` when it is not a
    readable image or is too large once decoded."""
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise InvalidInput(f"{field}: invalid base64 image data", field=field) from exc
    return open_input_image(data, field).convert("RGB").resize((width, height))


def _decode_mask(value: str, width: int, height: int, invert: bool, blur: int) -> Image.Image:
    """The inpainting mask as an L image of the output size: white is repainted (A1111's rule),
    black kept; ``invert`` swaps them and ``blur`` softens the edge."""
    mask = _decode_init(value, width, height, "mask").convert("L")
    if invert:
        mask = mask.point(lambda v: 255 - v)
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask
