"""Training jobs' records: the checkpoints a trainer stores while it runs (fenced by the lease
epoch, the newest few kept), and the finished job's LoRA registered in the model registry in the
completion's own transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from sdfleet.domain import EventType, Job, JobKind, ModelKind, ModelRecord
from sdfleet.errors import ValidationError
from sdfleet.jobs.blobkeys import LORA_CONTENT_TYPE, checkpoint_key
from sdfleet.jobs.registry import lora_registration_name
from sdfleet.jobs.transitions import Effects, Transitions, Writer, held_job, load_worker
from sdfleet.jobs.types import CheckpointRecorded, Clock, Completion
from sdfleet.store import SqlTx

log = logging.getLogger("sdfleet.jobs")


def register_lora(tx: SqlTx, job: Job, c: Completion, now: float) -> dict[str, Any]:
    """A finished training job's LoRA (output 0) into the registry under the job's name, in the
    completion's transaction: ``<lora:name:1>`` works as soon as the job is succeeded. Workers fetch
    it from the blob store (``blob:`` source: a signed URL with the claim)."""
    lora = next((o for o in c.outputs if o.index == 0), None)
    name = str(job.spec.get("name") or f"lora-{job.id}")
    if lora is None or lora.content_type != LORA_CONTENT_TYPE or not lora.sha256:
        raise ValidationError("a training job's output 0 must be its LoRA (.safetensors)", field="outputs")
    requested = name
    registered, problem = lora_registration_name(tx.get_models, requested, job.tenant, job.id)
    if problem is not None:
        log.warning("training.renamed job_id=%s name=%s requested=%s", job.id, registered, requested)
    if registered is None:
        return {"lora": {"name": None, "problem": problem, "sha256": lora.sha256, "size": lora.size}}
    name = registered
    trigger = job.spec.get("trigger_word")
    record = ModelRecord(
        name=name,
        kind=ModelKind.LORA,
        arch=job.requirements.arch,
        source=f"blob:{lora.blob_key}",
        sha256=lora.sha256.lower(),
        size=lora.size,
        trigger_words=[trigger] if isinstance(trigger, str) and trigger else [],
        description=f"trained on {job.spec.get('base_model')}",
        created_at=now,
    )
    tx.upsert_model(record)
    log.info("training.registered job_id=%s name=%s sha256=%s", job.id, name, record.sha256)
    lora_result: dict[str, Any] = {
        "name": name,
        "sha256": record.sha256,
        "size": record.size,
        "source": record.source,
    }
    if problem is not None:
        lora_result.update(requested_name=requested, problem=problem)
    return {"lora": lora_result}


class Checkpoints:
    """A running training job's checkpoints."""

    def __init__(self, transitions: Transitions, write: Writer, clock: Clock):
        self.transitions = transitions
        self._write = write
        self.clock = clock

    async def record(
        self,
        worker_id: str,
        tenant: str | None,
        job_id: str,
        epoch: int,
        *,
        step: int,
        key: str,
        size: int,
        sha256: str | None = None,
    ) -> CheckpointRecorded:
        """A worker stored a training checkpoint: record it on the job (fenced by the lease epoch; a
        stale epoch is :class:`StaleLease`), keep the newest ``keep_checkpoints``, emit a
        ``checkpoint`` event and a ``job.checkpoint`` webhook. The caller deletes ``dropped`` blobs."""
        now = self.clock()

        def tx_fn(tx: SqlTx, fx: Effects) -> CheckpointRecorded:
            load_worker(tx, worker_id, tenant)
            job = held_job(tx, job_id, epoch, worker_id)
            if job.kind != JobKind.TRAIN_LORA:
                raise ValidationError(f"job {job_id} is not a training job", field="job_id")
            if key != checkpoint_key(job, epoch, step):
                raise ValidationError(
                    f"checkpoint must be stored at {checkpoint_key(job, epoch, step)!r}", field="key"
                )
            keep = max(1, int(job.spec.get("keep_checkpoints") or 1))
            entries = [c for c in job.checkpoints if c.get("key") != key]
            entries.append(
                {"step": step, "key": key, "size": size, "sha256": sha256, "epoch": epoch, "at": now}
            )
            entries.sort(key=lambda c: (int(c["step"]), int(c.get("epoch", 0))))
            kept, dropped = entries[-keep:], entries[:-keep]
            tx.update_job(job.id, checkpoints=kept, updated_at=now)
            job.checkpoints = kept
            data = {"step": step, "size": size, "kept": [c["step"] for c in kept]}
            tx.insert_events([(job.id, job.tenant, EventType.CHECKPOINT, data, now)])
            self.transitions.queue_webhooks(tx, fx, [job], "job.checkpoint", now, extra={"checkpoint": data})
            return CheckpointRecorded(job, [int(c["step"]) for c in kept], [str(c["key"]) for c in dropped])

        recorded = await self._write(tx_fn, Effects(jobs={job_id}))
        log.info(
            "training.checkpoint job_id=%s epoch=%d step=%d kept=%s dropped=%d",
            job_id,
            epoch,
            step,
            recorded.kept,
            len(recorded.dropped),
        )
        return recorded
