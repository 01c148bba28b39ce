"""Running a ``train_lora`` job on a worker: the glue between the job protocol and
:class:`sdfleet.training.trainer.LoraTrainer`.

For a claimed training job the worker

1. waits for the base checkpoint (the model cache fetches it with the claim) and the training images
   (the input prefetch), writes the images to the job's scratch folder, and downloads the checkpoint
   to resume from when the claim carries one (``ClaimedJob.resume``);
2. runs the trainer in a thread (``asyncio.to_thread``); heartbeats carry step, total, loss, it/s and
   ETA; ``should_stop`` is cancel, a lost lease or a graceful stop (then the trainer writes a
   checkpoint at the step it reached, ``checkpoint_on_stop``, which is uploaded before the release);
3. on every checkpoint (on the training thread, which waits): asks for an upload URL
   (``POST /v1/worker/jobs/{id}/checkpoint/upload``), PUTs the file (presigned URL on an object store,
   the orchestrator with the local blob store) and reports it (``POST /v1/worker/jobs/{id}/checkpoint``,
   fenced by the lease epoch); a stale epoch means another worker has the job: stop at once;
4. on success uploads the LoRA (output 0) and the final validation images (outputs 1…) and completes
   the job; the orchestrator registers the LoRA in the model registry.

The run sees only its :class:`~sdfleet.worker.context.RunContext` (never the runner) and ends the
job through ``ctx.reporter``, like every kind. torch is imported only when a training job runs
(``import sdfleet.worker.runner`` stays light).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from sdfleet.errors import ModelUnavailable, SdfleetError, StaleLease, ValidationError
from sdfleet.specs.training import LORA_CONTENT_TYPE, LoraTrainSpec
from sdfleet.wire import CheckpointReport, CheckpointUploadRequest, OutputItem
from sdfleet.worker.context import Finish, RunContext
from sdfleet.worker.held import HeldJob, Phase
from sdfleet.worker.outputs import encode_png

log = logging.getLogger("sdfleet.worker.training")

_EXT = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"RIFF": ".webp"}


def _image_suffix(data: bytes) -> str:
    for magic, ext in _EXT.items():
        if data.startswith(magic):
            return ext
    return ".png"


def _from_data_url(value: str) -> bytes:
    return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value)


class TrainingRun:
    """One training job on this worker (a :class:`~sdfleet.worker.context.JobRun` that trains,
    uploads and reports on the engine: the engine is not shared with a next job meanwhile)."""

    def __init__(self, ctx: RunContext, job: HeldJob) -> None:
        self.ctx = ctx
        self.job = job
        self.loop = asyncio.get_running_loop()
        self.validation: list[Image.Image] = []
        self.checkpoints = 0
        self.work_dir: Path | None = None

    # ------------------------------------------------------------------ the whole job
    async def execute(self) -> Finish | None:
        """Train and report the job (completed, failed, canceled, released or dropped); never
        raises, and leaves nothing to finish."""
        reporter, job = self.ctx.reporter, self.job
        try:
            await self._run()
        except Exception as exc:  # a bug here must not kill the worker: report it, retryable
            log.exception("training.crashed job_id=%s", job.id)
            if reporter.holds(job):
                await reporter.fail(job, "worker_error", f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            if self.work_dir is not None:
                await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        return None

    async def _run(self) -> None:
        ctx, job = self.ctx, self.job
        reporter = ctx.reporter
        try:
            spec = LoraTrainSpec.parse(job.claim.params)
        except ValidationError as exc:
            await reporter.fail(
                job, "invalid_params", f"this worker cannot read the job: {exc}", retryable=False
            )
            return
        models = await ctx.models_ready(job)
        if isinstance(models, ModelUnavailable):
            log.warning("job.models_unavailable job_id=%s error=%s", job.id, models)
            await reporter.fail(job, models.code, str(models), retryable=models.retryable)
            return
        if job.should_stop():
            await reporter.after_stop(job, None)
            return
        base = models.get(("checkpoint", spec.base_model))
        if base is None:
            await reporter.fail(
                job,
                "model_unavailable",
                f"the base model {spec.base_model!r} is not on this worker",
                retryable=True,
            )
            return
        root = Path(ctx.settings.train_dir) if ctx.settings.train_dir else None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"train-{job.id}-{job.epoch}-", dir=root))
        try:
            images, class_images = await self._images(spec)
            resume = await self._resume_file()
        except SdfleetError as exc:
            await reporter.fail(
                job, "input_unavailable", f"could not fetch the job's inputs: {exc}", retryable=True
            )
            return
        await self._train(spec, base, images, class_images, resume)

    async def _images(self, spec: LoraTrainSpec) -> tuple[list[Path], list[Path]]:
        """The training (and class) images on disk, in the order of the spec."""
        assert self.work_dir is not None
        fetched = await self.job.inputs if self.job.inputs is not None else {}
        folder = self.work_dir / "images"
        folder.mkdir()

        def write(name: str, refs: list[str]) -> list[Path]:
            paths = []
            for index, ref in enumerate(refs):
                if ref not in fetched:
                    raise ValidationError(f"input {ref!r} was not handed out with the claim", field=name)
                data = _from_data_url(fetched[ref])
                path = folder / f"{name}-{index:04d}{_image_suffix(data)}"
                path.write_bytes(data)
                paths.append(path)
            return paths

        images = await asyncio.to_thread(write, "images", [i.ref for i in spec.images])
        classes = await asyncio.to_thread(write, "class", [i.ref for i in spec.class_images])
        return images, classes

    async def _resume_file(self) -> Path | None:
        resume = self.job.claim.resume
        if resume is None:
            return None
        assert self.work_dir is not None
        started = time.monotonic()
        data = await self.ctx.client.get_blob(resume.url, retry_for=300.0)
        if resume.sha256 and hashlib.sha256(data).hexdigest() != resume.sha256:
            raise ModelUnavailable(
                f"checkpoint of step {resume.step} does not match its sha256", retryable=True
            )
        path = self.work_dir / "resume.safetensors"
        await asyncio.to_thread(path.write_bytes, data)
        log.info(
            "training.resume_fetched job_id=%s step=%d bytes=%d seconds=%.2f",
            self.job.id,
            resume.step,
            len(data),
            time.monotonic() - started,
        )
        return path

    # ------------------------------------------------------------------ training
    async def _train(
        self,
        spec: LoraTrainSpec,
        base: Path,
        images: list[Path],
        class_images: list[Path],
        resume: Path | None,
    ) -> None:
        ctx, job = self.ctx, self.job
        job.phase = Phase.RUNNING
        job.total = spec.steps
        job.step = job.claim.resume.step if job.claim.resume is not None else 0
        job.timings["wait"] = time.monotonic() - job.claimed_at
        log.info(
            "training.started job_id=%s epoch=%d steps=%d resume_from=%s",
            job.id,
            job.epoch,
            spec.steps,
            job.claim.resume.step if job.claim.resume else None,
        )
        result, error = await ctx.run_engine(
            job,
            "train",
            lambda: self._train_sync(spec, base, images, class_images, resume),
            keep=(ValidationError,),  # images the trainer cannot use, a checkpoint of another run
        )
        report = ctx.reporter.after_run(job, error, "train")  # a ValidationError: images it cannot use
        if report is not None:
            await report
            return
        job.phase = Phase.FINISHING
        await self._finish(result)

    def _train_sync(
        self,
        spec: LoraTrainSpec,
        base: Path,
        images: list[Path],
        class_images: list[Path],
        resume: Path | None,
    ) -> Any:
        """On the training thread: build the trainer (loads the base model) and run it."""
        import torch

        from sdfleet.training.data import images_from_spec
        from sdfleet.training.trainer import LoraTrainer

        settings = self.ctx.settings
        if settings.train_threads:
            torch.set_num_threads(settings.train_threads)
        assert self.work_dir is not None
        refs = {image.ref: path for image, path in zip(spec.images, images, strict=True)}
        trainer = LoraTrainer(
            spec,
            base,
            images_from_spec(spec, refs),
            self.work_dir / "run",
            device=settings.device,
            class_images=class_images,
            allow_pickle=settings.allow_pickle,
        )
        try:
            return trainer.run(
                on_progress=self._on_progress,
                on_checkpoint=self._on_checkpoint,
                on_validation=self._on_validation,
                should_stop=self.job.should_stop,
                resume=resume,
                checkpoint_on_stop=True,
            )
        finally:
            trainer.close()

    # ------------------------------------------------------------------ callbacks (training thread)
    def _on_progress(self, step: int, total: int, loss: float, it_per_s: float, eta: float) -> None:
        job = self.job
        job.step, job.total = step, total
        info: dict[str, float] = {}
        if math.isfinite(loss):
            info["loss"] = round(loss, 6)
        if math.isfinite(it_per_s):
            info["it_per_s"] = round(it_per_s, 4)
        if math.isfinite(eta):
            info["eta_seconds"] = round(eta, 2)
        job.info = info

    def _on_validation(self, step: int, images: list[Image.Image]) -> None:
        self.validation = list(images)

    def _on_checkpoint(self, step: int, path: Path) -> None:
        """Upload and report the checkpoint before training goes on (a checkpoint the orchestrator
        has not recorded does not exist for the next worker)."""
        if self.job.lost or self.job.cancel:
            return
        future = asyncio.run_coroutine_threadsafe(self._store_checkpoint(step, path), self.loop)
        future.result()

    async def _store_checkpoint(self, step: int, path: Path) -> None:
        ctx, job = self.ctx, self.job
        started = time.monotonic()
        try:
            data = await asyncio.to_thread(path.read_bytes)
            target = await ctx.client.checkpoint_upload(
                job.id, CheckpointUploadRequest(worker_id=ctx.worker_id, epoch=job.epoch, step=step)
            )
            await ctx.client.put_blob(
                target.url, data, target.content_type, retry_for=120.0, headers=target.headers
            )
            answer = await ctx.client.checkpoint(
                job.id,
                CheckpointReport(
                    worker_id=ctx.worker_id,
                    epoch=job.epoch,
                    step=step,
                    key=target.key,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                ),
            )
        except StaleLease as exc:
            log.warning(
                "training.checkpoint_stale job_id=%s epoch=%d step=%d error=%s", job.id, job.epoch, step, exc
            )
            ctx.reporter.mark_lost(job)
            return
        except SdfleetError as exc:  # the next checkpoint may fare better; training goes on
            log.error("training.checkpoint_failed job_id=%s step=%d error=%s", job.id, step, exc)
            return
        self.checkpoints += 1
        ctx.stats.bytes_uploaded += len(data)
        log.info(
            "training.checkpoint_stored job_id=%s epoch=%d step=%d bytes=%d kept=%s seconds=%.3f",
            job.id,
            job.epoch,
            step,
            len(data),
            answer.kept,
            time.monotonic() - started,
        )

    # ------------------------------------------------------------------ success
    async def _finish(self, result: Any) -> None:
        ctx, job = self.ctx, self.job
        reporter = ctx.reporter
        async with reporter.finishing(job):
            lora_bytes = await asyncio.to_thread(Path(result.lora_path).read_bytes)
            files: list[tuple[bytes, str]] = [(lora_bytes, LORA_CONTENT_TYPE)]
            for image in self.validation[: len(job.claim.uploads) - 1]:
                files.append((await asyncio.to_thread(encode_png, image), "image/png"))
            items = []
            t0 = time.monotonic()
            for index, (data, content_type) in enumerate(files):
                target = job.claim.uploads[index]
                await ctx.client.put_blob(target.url, data, content_type, headers=target.headers)
                ctx.stats.bytes_uploaded += len(data)
                items.append(
                    OutputItem(
                        index=index,
                        key=target.key,
                        content_type=content_type,
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                    )
                )
            job.timings["upload"] = time.monotonic() - t0
            if job.should_stop():
                await reporter.after_stop(job, None)
                return
            training = {
                "name": result.name,
                "arch": result.arch,
                "steps": result.steps,
                "resumed_from": result.resumed_from,
                "final_loss": result.final_loss if math.isfinite(result.final_loss) else None,
                "it_per_s": round(result.it_per_s, 4),
                "seconds": round(result.seconds, 3),
                "checkpoints_stored": self.checkpoints,
            }
            if await reporter.complete(job, items, {"training": training}) is not None:
                log.info(
                    "training.completed job_id=%s epoch=%d name=%s resumed_from=%s engine_seconds=%.3f",
                    job.id,
                    job.epoch,
                    result.name,
                    result.resumed_from,
                    job.engine_seconds,
                )


__all__ = ["LORA_CONTENT_TYPE", "TrainingRun"]
