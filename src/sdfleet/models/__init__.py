"""The worker-side model cache: registry models fetched on demand, verified, kept by sha256 under a
disk budget (:class:`ModelCache`), and the name → file lookups the engine uses (:class:`ModelResolver`)."""

from __future__ import annotations

from sdfleet.models.cache import CacheEntry, ModelCache
from sdfleet.models.resolver import ModelResolver
from sdfleet.models.sources import Fetch, check_name, civitai_url, hf_url, plan_fetch

__all__ = [
    "CacheEntry",
    "Fetch",
    "ModelCache",
    "ModelResolver",
    "check_name",
    "civitai_url",
    "hf_url",
    "plan_fetch",
]
