"""A DreamBooth-style LoRA trainer for SD 1.x / 2.x and SDXL on diffusers + peft, resumable bit for bit.

:class:`LoraTrainer` loads the base checkpoint with the engine's own loader
(:class:`sdfleet.engine.sd.models.ModelStore`: single ``.safetensors`` files with or without embedded
configs, diffusers folders), puts peft LoRA layers on the UNet's attention projections (and, with
``train_text_encoder``, on the text encoders' ones), and trains them with AdamW on the usual
noise-prediction loss (epsilon or v, as the checkpoint predicts), with optional prior preservation.

- **Where randomness comes from**: the trainer's own CPU ``torch.Generator`` (seeded from the spec) draws
  the latent samples, the noise, the noise offset and the timesteps, on the CPU whatever the device, so
  the stream is the same on every machine; the data order is a function of (seed, epoch)
  (:class:`sdfleet.training.data.SampleOrder`). The LoRA's initial weights come from torch's generator
  re-seeded with the spec's seed inside a forked RNG. Class and validation images use per-image seeded
  generators, also inside a forked RNG, so rendering never moves the training stream.
- **Checkpoints** (:class:`sdfleet.training.state.TrainState`) hold the LoRA weights, the optimizer, the
  LR scheduler, the grad scaler, the step and every RNG state. Resuming from one continues exactly: on
  the CPU, 30 steps in one go and 20 + 10 across a checkpoint give the same bits.
- **Precision**: fp32 on the CPU; on CUDA the frozen weights in bf16 (fp16 when bf16 is unsupported, or
  as asked) under autocast, the LoRA weights and optimizer in fp32, and a GradScaler for fp16.
- **Latents and (without text-encoder training) prompt encodings are computed once** at the start, so a
  step is one UNet forward and backward.

Callbacks (all optional, called on the training thread):

- ``on_progress(step, total, loss, it_per_s, eta_seconds)`` after every step;
- ``on_checkpoint(step, path)`` every ``checkpoint_every`` steps, after the file is complete. The file
  stays on disk until ``keep_checkpoints`` newer ones exist (the trainer prunes its local folder); the
  callback uploads it and prunes remote copies (:class:`sdfleet.training.state.CheckpointRetention`);
- ``on_validation(step, images)`` every ``validation_every`` steps and at the end (one PIL image per
  validation prompt, seeds ``seed + i``);
- ``should_stop()`` before every step (and between class images); True raises
  :class:`sdfleet.errors.Interrupted` whose ``details`` carry the step reached and, with
  ``checkpoint_on_stop``, the path of a checkpoint written at that step.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from sdfleet.engine.sd.checkpoints import SD1, SD2, SDXL, HashCache
from sdfleet.engine.sd.models import LoadedModel, ModelStore, auto_device
from sdfleet.errors import EngineError, Interrupted, SdfleetError, ValidationError
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.training.data import (
    CLASS_STREAM,
    INSTANCE_STREAM,
    SampleOrder,
    TrainingImage,
    caption_of,
    prepare,
)
from sdfleet.training.export import kohya_metadata, kohya_tensors, write_kohya_lora
from sdfleet.training.runtime import (
    CallbackFailed,
    Encoder,
    Sample,
    Speed,
    TrainResult,
    fork_rng,
    guarded,
    resolve_precision,
    safe_name,
)
from sdfleet.training.state import (
    CheckpointRetention,
    RngState,
    TrainState,
    checkpoint_name,
    local_checkpoints,
)

log = logging.getLogger("sdfleet.training")

OnProgress = Callable[[int, int, float, float, float], None]
"""``(step, total, loss, it_per_s, eta_seconds)``."""
OnCheckpoint = Callable[[int, Path], None]
"""``(step, path of the checkpoint file)``."""
OnValidation = Callable[[int, list[Image.Image]], None]
"""``(step, one image per validation prompt)``."""
ShouldStop = Callable[[], bool]

ADAPTER = "sdfleet"
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
TRAINABLE_ARCHS = (SD1, SD2, SDXL)
_CLASS_SEED_OFFSET = 1_000_003


class LoraTrainer:
    """Trains one LoRA; one object per run (a resumed run is a new trainer given the checkpoint).

    ``spec`` is the job's :class:`LoraTrainSpec` (or its raw dict); ``base_model_path`` the checkpoint
    the caller resolved ``spec.base_model`` to; ``images`` the local training images in the order of
    ``spec.images`` (:func:`sdfleet.training.data.images_from_spec` pairs them with their captions);
    ``class_images`` local class images for prior preservation (missing ones are generated into
    ``work_dir/class_images``). Everything the trainer writes goes under ``work_dir``.
    """

    def __init__(
        self,
        spec: LoraTrainSpec | Mapping[str, Any],
        base_model_path: Path | str,
        images: Sequence[TrainingImage | Path | str],
        work_dir: Path | str,
        device: str | None = None,
        *,
        class_images: Sequence[Path | str] = (),
        base_model_name: str | None = None,
        allow_pickle: bool = False,
        hashes: HashCache | None = None,
        export_dtype: torch.dtype = torch.float16,
    ) -> None:
        self.spec = LoraTrainSpec.parse(spec)
        self.base_model_path = Path(base_model_path)
        if not self.base_model_path.exists():
            raise ValidationError(f"base model {self.base_model_path} does not exist", field="base_model")
        self.images = [i if isinstance(i, TrainingImage) else TrainingImage(Path(i)) for i in images]
        if len(self.images) != len(self.spec.images):
            raise ValidationError(
                f"the spec lists {len(self.spec.images)} images but {len(self.images)} files were given",
                field="images",
            )
        for index, image in enumerate(self.images):
            if not image.path.is_file():
                raise ValidationError(f"training image {image.path} does not exist", field=f"images.{index}")
        self.given_class_images = [Path(p) for p in class_images]
        self.work_dir = Path(work_dir)
        self.device, _ = auto_device(device)
        self.precision = resolve_precision(self.device, self.spec.mixed_precision)
        self.base_model_name = base_model_name or self.spec.base_model
        self.name = self.spec.name or f"{self.spec.base_model}-lora"
        self.allow_pickle = allow_pickle
        self.hashes = hashes or HashCache()
        self.export_dtype = export_dtype
        self.checkpoint_dir = self.work_dir / "checkpoints"
        self.class_dir = self.work_dir / "class_images"
        self._ran = False
        # set up by _setup()
        self.model: LoadedModel | None = None
        self.trainable: dict[str, dict[str, torch.nn.Parameter]] = {}
        self.generator = torch.Generator("cpu")
        self._samples: dict[tuple[int, bool], Sample] = {}
        self._class_samples: dict[int, Sample] = {}
        self._encodings: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._ids: dict[str, list[torch.Tensor]] = {}
        self._encoders: list[Encoder] = []
        self._class_paths: list[Path] = []
        self._data_sha256 = ""

    # ================================================================== public
    def close(self) -> None:
        """Drop the model (and its LoRA layers) so its memory can be reused."""
        self.model = None
        self.trainable = {}
        self._samples.clear()
        self._class_samples.clear()
        self._encodings.clear()
        self._encoders = []
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def arch(self) -> str:
        return self._model().arch

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The current LoRA weights (float32 copies on the CPU), ``<component>.<peft parameter>`` keys."""
        return {
            f"{component}.{name}": param.detach().to("cpu", copy=True)
            for component, params in self.trainable.items()
            for name, param in params.items()
        }

    def run(
        self,
        *,
        on_progress: OnProgress | None = None,
        on_checkpoint: OnCheckpoint | None = None,
        on_validation: OnValidation | None = None,
        should_stop: ShouldStop | None = None,
        resume: TrainState | Path | str | None = None,
        checkpoint_on_stop: bool = False,
    ) -> TrainResult:
        """Train (from ``resume`` when given) to ``spec.steps``, export the LoRA, return the result.

        Raises :class:`Interrupted` when ``should_stop`` says so, :class:`ValidationError` for unusable
        inputs (images, a checkpoint of another run), :class:`EngineError` for anything else the
        hardware or the libraries refuse (out of memory is retryable).
        """
        if self._ran:
            raise RuntimeError("a LoraTrainer runs once; make a new one to resume from its checkpoint")
        self._ran = True
        state = TrainState.load(resume) if isinstance(resume, (str, Path)) else resume
        if state is not None:
            self._check_fingerprint(state)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                return self._run(
                    state,
                    guarded(on_progress),
                    guarded(on_checkpoint),
                    guarded(on_validation),
                    guarded(should_stop) or (lambda: False),
                    checkpoint_on_stop,
                )
        except CallbackFailed as failed:
            raise failed.error from None  # the caller's own exception, untouched
        except SdfleetError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(f"out of memory while training: {exc}", retryable=True) from exc
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise EngineError(f"training failed: {type(exc).__name__}: {exc}", retryable=False) from exc

    # ================================================================== the run
    def _run(
        self,
        state: TrainState | None,
        on_progress: OnProgress | None,
        on_checkpoint: OnCheckpoint | None,
        on_validation: OnValidation | None,
        stop: ShouldStop,
        checkpoint_on_stop: bool,
    ) -> TrainResult:
        started = time.time()
        spec = self.spec
        self._setup(stop)
        optimizer, scheduler, scaler = self._optimizer()
        start = 0
        if state is not None:
            self._restore(state, optimizer, scheduler, scaler)
            start = state.step
            log.info("training.resumed name=%s step=%d", self.name, start)
        else:
            self.generator.manual_seed(spec.seed)
        retention: CheckpointRetention[Path] = CheckpointRetention(
            spec.keep_checkpoints, local_checkpoints(self.checkpoint_dir)
        )
        instance_order = SampleOrder(
            len(self.images), spec.seed, INSTANCE_STREAM, random_flip=spec.random_flip
        )
        class_order = (
            SampleOrder(len(self._class_paths), spec.seed, CLASS_STREAM, random_flip=False)
            if self._class_paths
            else None
        )
        speed = Speed()
        it_per_s = 0.0
        loss = float(state.info.get("loss", math.nan)) if state is not None else math.nan
        last_checkpoint = start
        unet = self._model().pipe.unet
        for step in range(start + 1, spec.steps + 1):
            if stop():
                self._stopped(
                    step - 1,
                    last_checkpoint,
                    checkpoint_on_stop,
                    loss,
                    optimizer,
                    scheduler,
                    scaler,
                    retention,
                    on_checkpoint,
                )
            tick = time.perf_counter()
            unet.train()
            loss = self._step(step, instance_order, class_order, optimizer, scheduler, scaler)
            it_per_s = speed.add(time.perf_counter() - tick)
            if on_progress is not None:
                eta = (spec.steps - step) / it_per_s if it_per_s > 0 else math.inf
                on_progress(step, spec.steps, loss, it_per_s, eta)
            if spec.checkpoint_every and step % spec.checkpoint_every == 0:
                self._checkpoint(step, loss, optimizer, scheduler, scaler, retention, on_checkpoint)
                last_checkpoint = step
            if on_validation is not None and spec.validation_every and step % spec.validation_every == 0:
                on_validation(step, self.render_validation())
        if (
            on_validation is not None
            and spec.validation_prompts
            and (not spec.validation_every or spec.steps % spec.validation_every)
        ):
            on_validation(spec.steps, self.render_validation())
        lora_path, metadata = self._export(started, loss)
        return TrainResult(
            lora_path=lora_path,
            name=self.name,
            arch=self.arch,
            steps=spec.steps,
            resumed_from=state.step if state is not None else None,
            final_loss=loss,
            seconds=time.time() - started,
            it_per_s=it_per_s,
            metadata=metadata,
            checkpoints=[p for p in retention.kept if p.exists()],
            class_images=list(self._class_paths),
        )

    def _stopped(
        self,
        step: int,
        last_checkpoint: int,
        checkpoint_on_stop: bool,
        loss: float,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        retention: CheckpointRetention[Path],
        on_checkpoint: OnCheckpoint | None,
    ) -> None:
        path: Path | None = None
        if checkpoint_on_stop and step > last_checkpoint:
            path = self._checkpoint(step, loss, optimizer, scheduler, scaler, retention, on_checkpoint)
        elif retention.latest_step == step:
            path = retention.latest  # the checkpoint of this very step is already on disk
        raise Interrupted(
            f"training stopped at step {step} of {self.spec.steps}",
            details={"step": step, "checkpoint": str(path) if path is not None else None},
        )

    # ================================================================== setup
    def _model(self) -> LoadedModel:
        if self.model is None:
            raise RuntimeError("the trainer has not loaded its model yet")
        return self.model

    def _setup(self, stop: ShouldStop) -> None:
        spec = self.spec
        store = ModelStore(
            device=self.device,
            dtype=self.precision.weight_dtype,
            budget_bytes=2**62,
            allow_pickle=self.allow_pickle,
            hashes=self.hashes,
        )
        self.model = model = store.get(self.base_model_path, self.base_model_name)
        if model.arch not in TRAINABLE_ARCHS:
            raise ValidationError(
                f"{self.base_model_name} is an {model.arch} model; LoRAs are trained on SD 1.x, 2.x and SDXL",
                field="base_model",
            )
        pipe = model.pipe
        if int(pipe.unet.config.in_channels) != 4:
            raise ValidationError(
                f"{self.base_model_name} is an inpainting model; train on its base model", field="base_model"
            )
        pipe.set_progress_bar_config(disable=True)
        for module in self._modules():
            module.requires_grad_(False)
            module.eval()
        self._encoders = [Encoder("text_encoder", pipe.text_encoder, pipe.tokenizer)]
        if model.sdxl:
            self._encoders.append(Encoder("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2))
        diffusers: Any = importlib.import_module("diffusers")
        self.noise_scheduler: Any = diffusers.DDPMScheduler.from_config(model.scheduler_config)
        prediction = self.noise_scheduler.config.prediction_type
        if prediction not in ("epsilon", "v_prediction"):
            raise ValidationError(f"cannot train a {prediction}-prediction model", field="base_model")
        # class images come from the base model, before any LoRA exists
        if spec.prior_preservation:
            self._class_paths = self._class_images(stop)
        self._cache_samples()
        self._inject()
        if spec.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            if spec.train_text_encoder:
                for enc in self._encoders:
                    enable = getattr(enc.model, "activation_checkpointing_enable", None)
                    (enable or enc.model.gradient_checkpointing_enable)()

    def _modules(self) -> Iterator[Any]:
        pipe = self._model().pipe
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                yield module

    def _class_images(self, stop: ShouldStop) -> list[Path]:
        """The given class images, topped up to ``num_class_images`` with images the base model renders
        (deterministic per index: the same files on every worker of the same device type)."""
        spec = self.spec
        paths = list(self.given_class_images)
        wanted = spec.effective_class_images
        if len(paths) >= wanted:
            return paths
        self.class_dir.mkdir(parents=True, exist_ok=True)
        pipe = self._model().pipe
        for index in range(wanted - len(paths)):
            target = self.class_dir / f"class-{index:04d}.png"
            if not target.is_file():
                if stop():
                    raise Interrupted(
                        f"stopped while generating class images ({index} of {wanted - len(paths)})",
                        details={"step": 0, "checkpoint": None},
                    )
                seed = spec.seed + _CLASS_SEED_OFFSET + index
                image = self._render(pipe, spec.class_prompt or "", "", spec.class_image_steps, 7.0, seed)
                partial = target.with_name(f".{target.name}.partial")
                image.save(partial, format="PNG")
                partial.replace(target)
            paths.append(target)
        log.info(
            "training.class_images count=%d generated=%d", len(paths), wanted - len(self.given_class_images)
        )
        return paths

    def _encode_latent(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self._model().pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels[None].to(self.device, vae.dtype)).latent_dist
        return dist.mean[0].float().cpu(), dist.std[0].float().cpu()

    def _time_ids(self, original: tuple[int, int], crop: tuple[int, int]) -> torch.Tensor | None:
        if not self._model().sdxl:
            return None
        res = self.spec.resolution
        return torch.tensor([*original, *crop, res, res], dtype=torch.float32)

    def _cache_samples(self) -> None:
        """VAE latent distributions (both flips when flipping) and prompt tokens/encodings, once."""
        spec = self.spec
        digest = hashlib.sha256()
        for index, image in enumerate(self.images):
            digest.update(image.path.read_bytes())
            prompt = caption_of(image, spec)
            for flip in (False, True) if spec.random_flip else (False,):
                prepared = prepare(image.path, spec.resolution, field=f"images.{index}", flip=flip)
                mean, std = self._encode_latent(prepared.pixels)
                time_ids = self._time_ids(prepared.original_size, prepared.crop_top_left)
                self._samples[(index, flip)] = Sample(mean, std, prompt, time_ids)
        self._data_sha256 = digest.hexdigest()
        for index, path in enumerate(self._class_paths):
            prepared = prepare(path, spec.resolution, field=f"class_images.{index}")
            mean, std = self._encode_latent(prepared.pixels)
            time_ids = self._time_ids(prepared.original_size, prepared.crop_top_left)
            self._class_samples[index] = Sample(mean, std, spec.class_prompt or "", time_ids)
        prompts = {s.prompt for s in self._samples.values()} | {
            s.prompt for s in self._class_samples.values()
        }
        for prompt in sorted(prompts):
            self._ids[prompt] = [
                enc.tokenizer(
                    [prompt],
                    padding="max_length",
                    max_length=enc.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids
                for enc in self._encoders
            ]
        if not spec.train_text_encoder:
            with torch.no_grad(), self._autocast():
                for prompt, ids in self._ids.items():
                    hidden, pooled = self._encode_prompts([ids])
                    self._encodings[prompt] = (hidden.detach(), None if pooled is None else pooled.detach())

    def _inject(self) -> None:
        """peft LoRA layers on the UNet (and text encoders), initialised from the seed; fp32 weights."""
        from peft import LoraConfig, inject_adapter_in_model

        spec = self.spec
        pipe = self._model().pipe
        targets: list[tuple[str, Any, tuple[str, ...]]] = [("unet", pipe.unet, UNET_TARGETS)]
        if spec.train_text_encoder:
            targets += [(enc.component, enc.model, TEXT_TARGETS) for enc in self._encoders]
        with fork_rng(self.device):
            torch.manual_seed(spec.seed)
            for component, module, modules in targets:
                options: dict[str, Any] = {"lora_alpha": spec.network_alpha}  # a float works: alpha / r
                config = LoraConfig(
                    r=spec.rank,
                    init_lora_weights="gaussian",
                    target_modules=list(modules),
                    lora_dropout=0.0,
                    **options,
                )
                inject_adapter_in_model(config, module, adapter_name=ADAPTER)
                params: dict[str, torch.nn.Parameter] = {}
                for name, param in module.named_parameters():
                    if ".lora_" in name:
                        param.data = param.data.to(torch.float32)
                        param.requires_grad_(True)
                        params[name] = param
                    else:
                        param.requires_grad_(False)
                if not params:
                    raise EngineError(f"no LoRA target modules found in the {component}", retryable=False)
                self.trainable[component] = params

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any, Any]:
        from diffusers.optimization import get_scheduler

        spec = self.spec
        groups: list[dict[str, Any]] = [
            {"params": list(self.trainable["unet"].values()), "lr": spec.learning_rate}
        ]
        te_params = [p for c, ps in self.trainable.items() if c != "unet" for p in ps.values()]
        if te_params:
            groups.append({"params": te_params, "lr": spec.text_encoder_lr or spec.learning_rate})
        optimizer = torch.optim.AdamW(groups, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        scheduler = get_scheduler(
            spec.lr_scheduler,
            optimizer,
            num_warmup_steps=spec.lr_warmup_steps,
            num_training_steps=spec.steps,
        )
        scaler = torch.amp.GradScaler("cuda") if self.precision.grad_scaler else None
        return optimizer, scheduler, scaler

    # ================================================================== one step
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision.autocast_dtype)

    def _encode_prompts(self, ids: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text conditioning of a batch (``ids[sample][encoder]``): SD 1.x/2.x the last hidden state,
        SDXL both encoders' penultimate hidden states side by side and the second one's pooled output."""
        if not self._model().sdxl:
            batch = torch.cat([i[0] for i in ids]).to(self.device)
            return self._encoders[0].model(batch)[0], None
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for slot, enc in enumerate(self._encoders):
            batch = torch.cat([i[slot] for i in ids]).to(self.device)
            out = enc.model(batch, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if slot == 1:
                pooled = out.text_embeds
        return torch.cat(hidden, dim=-1), pooled

    def _step(
        self,
        step: int,
        instance_order: SampleOrder,
        class_order: SampleOrder | None,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
    ) -> float:
        spec = self.spec
        model = self._model()
        samples = [self._samples[(i, f)] for i, f in instance_order.batch(step, spec.batch_size)]
        if class_order is not None:
            samples += [self._class_samples[i] for i, _ in class_order.batch(step, spec.batch_size)]
        gen = self.generator
        mean = torch.stack([s.mean for s in samples])
        std = torch.stack([s.std for s in samples])
        latents = mean + std * torch.randn(mean.shape, generator=gen)
        vae_config = model.pipe.vae.config
        shift = getattr(vae_config, "shift_factor", None)
        if shift is not None:
            latents = latents - shift
        latents = latents * float(vae_config.scaling_factor)
        noise = torch.randn(latents.shape, generator=gen)
        if spec.noise_offset:
            noise = noise + spec.noise_offset * torch.randn(
                (latents.shape[0], latents.shape[1], 1, 1), generator=gen
            )
        timesteps = torch.randint(
            0, int(self.noise_scheduler.config.num_train_timesteps), (latents.shape[0],), generator=gen
        )
        latents, noise, timesteps = latents.to(self.device), noise.to(self.device), timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        unet = model.pipe.unet
        with self._autocast():
            if spec.train_text_encoder:
                for enc in self._encoders:
                    enc.model.train()
                hidden, pooled = self._encode_prompts([self._ids[s.prompt] for s in samples])
            else:
                hidden = torch.cat([self._encodings[s.prompt][0] for s in samples])
                pooled_parts = [self._encodings[s.prompt][1] for s in samples]
                pooled = torch.cat([p for p in pooled_parts if p is not None]) if model.sdxl else None
            added: dict[str, torch.Tensor] | None = None
            if model.sdxl:
                time_ids = torch.stack([s.time_ids for s in samples if s.time_ids is not None])
                assert pooled is not None
                added = {"text_embeds": pooled, "time_ids": time_ids.to(self.device, pooled.dtype)}
            weight_dtype = self.precision.weight_dtype
            pred = unet(
                noisy.to(weight_dtype),
                timesteps,
                encoder_hidden_states=hidden.to(weight_dtype),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if class_order is not None:
            n = spec.batch_size
            loss = per_sample[:n].mean() + spec.prior_loss_weight * per_sample[n:].mean()
        else:
            loss = per_sample.mean()
        params = [p for ps in self.trainable.values() for p in ps.values()]
        if scaler is not None:
            torch.autograd.backward(scaler.scale(loss))
            if spec.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            torch.autograd.backward(loss)
            if spec.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach().item())
        if not math.isfinite(value):
            raise EngineError(f"the loss is {value} at step {step}", retryable=False)
        return value

    # ================================================================== checkpoints
    def _info(self, loss: float) -> dict[str, Any]:
        model = self._model()
        return {
            "arch": model.arch,
            "base_model": self.base_model_name,
            "base_model_sha256": model.sha256,
            "fingerprint": self.spec.training_fingerprint(),
            "data_sha256": self._data_sha256,
            "class_images": len(self._class_paths),
            "loss": loss,
            "precision": self.precision.label,
            "device": self.device.type,
        }

    def snapshot(
        self, step: int, loss: float, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
    ) -> TrainState:
        """The complete training state after ``step`` steps."""
        return TrainState(
            step=step,
            total_steps=self.spec.steps,
            samples_seen=step * self.spec.batch_size,
            lora=self.lora_state(),
            optimizer=optimizer.state_dict(),
            lr_scheduler=scheduler.state_dict(),
            grad_scaler=scaler.state_dict() if scaler is not None else None,
            rng=RngState.capture(self.generator),
            info=self._info(loss),
        )

    def _checkpoint(
        self,
        step: int,
        loss: float,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        retention: CheckpointRetention[Path],
        on_checkpoint: OnCheckpoint | None,
    ) -> Path:
        path = self.snapshot(step, loss, optimizer, scheduler, scaler).save(
            self.checkpoint_dir / checkpoint_name(step)
        )
        log.info("training.checkpoint name=%s step=%d path=%s", self.name, step, path)
        if on_checkpoint is not None:
            on_checkpoint(step, path)
        for old in retention.add(step, path):
            old.unlink(missing_ok=True)
        return path

    def _check_fingerprint(self, state: TrainState) -> None:
        if state.info.get("fingerprint") != self.spec.training_fingerprint():
            raise ValidationError(
                f"checkpoint {state.path.name if state.path else ''} belongs to a run with other training "
                "parameters",
                field="resume",
            )
        if not 0 <= state.step <= self.spec.steps:
            raise ValidationError(
                f"checkpoint step {state.step} is outside 0..{self.spec.steps}", field="resume"
            )

    def _restore(
        self, state: TrainState, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
    ) -> None:
        model = self._model()
        if state.info.get("arch") != model.arch or state.info.get("base_model_sha256") != model.sha256:
            raise ValidationError("the checkpoint was trained on another base model", field="resume")
        if state.info.get("data_sha256") != self._data_sha256:
            raise ValidationError("the checkpoint was trained on other images", field="resume")
        if state.samples_seen != state.step * self.spec.batch_size:
            raise ValidationError("the checkpoint's data position does not match its step", field="resume")
        current = self.lora_state()
        if set(current) != set(state.lora) or any(current[k].shape != state.lora[k].shape for k in current):
            raise ValidationError("the checkpoint's LoRA layers do not match this model", field="resume")
        with torch.no_grad():
            for component, params in self.trainable.items():
                for name, param in params.items():
                    param.copy_(state.lora[f"{component}.{name}"])
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.lr_scheduler)
        if scaler is not None and state.grad_scaler is not None:
            scaler.load_state_dict(state.grad_scaler)
        state.rng.restore(self.generator)

    # ================================================================== rendering, export
    def _render(
        self, pipe: Any, prompt: str, negative: str, steps: int, cfg: float, seed: int
    ) -> Image.Image:
        with fork_rng(self.device), torch.no_grad(), self._autocast():
            generator = torch.Generator("cpu").manual_seed(seed)
            out = pipe(
                prompt=prompt,
                negative_prompt=negative or None,
                num_inference_steps=steps,
                guidance_scale=cfg,
                height=self.spec.resolution,
                width=self.spec.resolution,
                generator=generator,
                output_type="pil",
            )
        image: Image.Image = out.images[0]
        return image

    def render_validation(self) -> list[Image.Image]:
        """One image per validation prompt from the current weights (seed ``spec.seed + i``)."""
        spec = self.spec
        modules = list(self._modules())
        modes = [m.training for m in modules]
        for module in modules:
            module.eval()
        try:
            return [
                self._render(
                    self._model().pipe,
                    prompt,
                    spec.validation_negative_prompt,
                    spec.validation_steps,
                    spec.validation_cfg_scale,
                    spec.seed + index,
                )
                for index, prompt in enumerate(spec.validation_prompts)
            ]
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.train(mode)

    def _export(self, started: float, loss: float) -> tuple[Path, dict[str, str]]:
        model = self._model()
        spec = self.spec
        tensors = kohya_tensors(
            self.lora_state(), arch=model.arch, alpha=spec.network_alpha, dtype=self.export_dtype
        )
        metadata = kohya_metadata(
            spec,
            arch=model.arch,
            name=self.name,
            base_model_name=self.base_model_name,
            base_model_sha256=model.sha256,
            steps=spec.steps,
            captions=[caption_of(image, spec) for image in self.images],
            class_images=len(self._class_paths),
            started_at=started,
            finished_at=time.time(),
            mixed_precision=self.precision.label,
            final_loss=loss if math.isfinite(loss) else None,
        )
        path = write_kohya_lora(self.work_dir / f"{safe_name(self.name)}.safetensors", tensors, metadata)
        log.info("training.exported name=%s path=%s tensors=%d", self.name, path, len(tensors))
        return path, metadata
