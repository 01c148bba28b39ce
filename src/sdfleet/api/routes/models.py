"""The model registry over HTTP: everyone with a key can read it, admins write it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from sdfleet.api.checked import CheckedRoute
from sdfleet.api.deps import Admin, Ctx, User
from sdfleet.domain import ModelKind, ModelRecord
from sdfleet.jobs.keys import Principal
from sdfleet.jobs.registry import may_see_provenance, public_description, trained_by

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=CheckedRoute)


class ModelCreate(BaseModel):
    """A registry entry to add (or replace). ``sha256`` and ``size`` are required for remote
    sources; for a local path the server computes them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: ModelKind
    arch: str | None = None
    source: str = Field(min_length=1, max_length=4000)
    sha256: str | None = None
    size: int | None = Field(default=None, ge=0)
    trigger_words: list[str] = Field(default_factory=list, max_length=64)
    default_weight: float = Field(default=1.0, ge=-10, le=10)
    description: str = Field(default="", max_length=4000)
    resolution: int | None = Field(
        default=None, ge=8, le=16384, description="Checkpoints: the side in pixels it was trained at."
    )
    scale: int | None = Field(
        default=None, ge=1, le=16, description="Upscalers: how many times bigger one pass makes an image."
    )


class TrainedByView(BaseModel):
    """Which tenant and job trained a LoRA (shown to admins and that tenant only)."""

    tenant: str
    job_id: str


class ModelView(BaseModel):
    """A registry entry. ``source`` and ``trained_by`` are shown to admins and to the tenant that
    trained the model only (null for everyone else)."""

    name: str
    kind: str
    arch: str | None
    source: str | None = Field(description="Where workers fetch it from (admins and the owner only).")
    sha256: str | None
    hash: str
    size: int | None
    trigger_words: list[str]
    default_weight: float
    description: str
    created_at: float
    resolution: int | None = Field(
        default=None, description="The side in pixels the checkpoint was trained at (checkpoints only)."
    )
    scale: int | None = Field(default=None, description="Upscalers: the factor of one pass of the net.")

    trained_by: TrainedByView | None = Field(
        default=None, description="The tenant and job that trained it (admins and the owner only)."
    )


def _view(m: ModelRecord, caller: Principal) -> ModelView:
    privileged = may_see_provenance(m, caller.tenant, is_admin=caller.is_admin)
    origin = trained_by(m) if privileged else None
    return ModelView(
        resolution=m.native_resolution,
        scale=m.scale,
        name=m.name,
        kind=m.kind.value,
        arch=m.arch,
        source=m.source if privileged else None,
        sha256=m.sha256,
        hash=m.short_hash,
        size=m.size,
        trigger_words=m.trigger_words,
        default_weight=m.default_weight,
        description=m.description if privileged else public_description(m),
        created_at=m.created_at,
        trained_by=TrainedByView(tenant=origin.tenant, job_id=origin.job_id) if origin else None,
    )


@router.get("")
async def list_models(
    ctx: Ctx, caller: User, kind: Annotated[ModelKind | None, Query()] = None
) -> dict[str, list[ModelView]]:
    """Every registered model (optionally of one kind)."""
    return {"models": [_view(m, caller) for m in await ctx.models.list(kind)]}


@router.get("/{name:path}")
async def get_model(name: str, ctx: Ctx, caller: User) -> ModelView:
    """One registry entry by name."""
    return _view(await ctx.models.get(name), caller)


@router.post("", status_code=201)
async def add_model(body: ModelCreate, ctx: Ctx, caller: Admin) -> ModelView:
    """Register a model (admin). Replaces an entry of the same name."""
    record = ModelRecord(**body.model_dump())
    return _view(await ctx.models.add(record), caller)


@router.delete("/{name:path}", status_code=204)
async def remove_model(name: str, ctx: Ctx, _: Admin) -> Response:
    await ctx.models.remove(name)
    return Response(status_code=204)
