"""Job specs: what a client asks a worker to do, validated, shared by the orchestrator and the workers.

Doors: :mod:`sdfleet.specs.training` (:class:`LoraTrainSpec`, the ``train_lora`` job's parameters).
Generation's :class:`sdfleet.domain.GenerationSpec` will join it here. Specs import nothing but
``domain``, ``errors`` and ``validation``, so the server side never imports torch-side packages
(``training/``, ``engine/``) to read a job.
"""

from __future__ import annotations
