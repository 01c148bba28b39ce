"""LoRA training: the resumable trainer (the job's parameters, :class:`LoraTrainSpec`, live in
:mod:`sdfleet.specs.training`, where the orchestrator reads them without this package).

- :mod:`sdfleet.training.trainer`: :class:`~sdfleet.training.trainer.LoraTrainer` (diffusers + peft,
  SD 1.x/2.x and SDXL) with progress, checkpoint, validation and stop callbacks.
- :mod:`sdfleet.training.state`: complete checkpoints (:class:`~sdfleet.training.state.TrainState`,
  safetensors + JSON) and :class:`~sdfleet.training.state.CheckpointRetention` (keep the newest N).
- :mod:`sdfleet.training.export`: the kohya-format LoRA file with ``ss_*`` metadata.
- :mod:`sdfleet.training.data`: training images, preprocessing, the (seed, epoch) data order.

Nothing is imported here, so ``import sdfleet.training`` needs no torch.
"""

from __future__ import annotations
