"""Domain records → wire views (the JSON clients see)."""

from __future__ import annotations

import math

from fastapi import Request

from sdfleet.api.deps import AppContext
from sdfleet.api.errors import json_safe
from sdfleet.domain import Job, Output
from sdfleet.wire import CheckpointView, ErrorView, JobView, OutputView, ProgressView

OUTPUT_URL_SECONDS = 24 * 3600.0


def is_detected_map(job: Job, output: Output) -> bool:
    """Whether ``output`` is one of a generation job's ControlNet detected maps (they follow its images)."""
    return job.detected_maps > 0 and output.index >= job.images_generated


def output_view(ctx: AppContext, request: Request, output: Output, detected_map: bool = False) -> OutputView:
    return OutputView(
        index=output.index,
        url=ctx.absolute(request, ctx.blobs.get_url(output.blob_key, OUTPUT_URL_SECONDS)),
        content_type=output.content_type,
        size=output.size,
        seed=None if detected_map else output.seed,
        infotext=None if detected_map else output.infotext,
        detected_map=detected_map,
    )


def job_view(
    ctx: AppContext, request: Request, job: Job, outputs: list[Output], created: bool | None = None
) -> JobView:
    total = job.progress_total
    step = job.progress_step
    fraction = 1.0 if job.state.value == "succeeded" else (step / total if total else 0.0)
    return JobView(
        id=job.id,
        kind=job.kind.value,
        state=job.state.value,
        priority=job.priority,
        labels=json_safe(job.labels),
        params=json_safe(job.spec) if isinstance(job.spec, dict) else {},
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=ProgressView(
            step=step,
            total=total,
            fraction=round(min(1.0, fraction), 4),
            loss=_number(job.progress_info.get("loss")),
            it_per_s=_number(job.progress_info.get("it_per_s")),
            eta_seconds=_number(job.progress_info.get("eta_seconds")),
        ),
        failures=job.failures,
        interruptions=job.interruptions,
        cancel_requested=job.cancel_requested,
        wait_reason=job.wait_reason if job.state.value in ("queued", "waiting") else None,
        error=ErrorView(code=job.error_code, message=job.error_message) if job.error_code else None,
        outputs=[output_view(ctx, request, o, is_detected_map(job, o)) for o in outputs],
        engine_seconds=round(job.engine_seconds, 6),
        cost_usd=round(job.cost_usd, 8),
        result=json_safe(job.result),
        idempotency_key=job.idempotency_key,
        created=created,
        parent_id=job.parent_id,
        stage=job.stage,
        checkpoints=[
            CheckpointView(
                step=int(c["step"]), size=int(c.get("size") or 0), created_at=float(c.get("at") or 0)
            )
            for c in job.checkpoints
        ],
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
