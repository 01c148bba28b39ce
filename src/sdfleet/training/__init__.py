"""LoRA training: the job's parameters and the resumable trainer.

- :mod:`sdfleet.training.config`: :class:`LoraTrainSpec`, the validated parameters of a ``train_lora``
  job (no torch; importable by the orchestrator).
- :mod:`sdfleet.training.trainer`: :class:`~sdfleet.training.trainer.LoraTrainer` (diffusers + peft,
  SD 1.x/2.x and SDXL) with progress, checkpoint, validation and stop callbacks.
- :mod:`sdfleet.training.state`: complete checkpoints (:class:`~sdfleet.training.state.TrainState`,
  safetensors + JSON) and :class:`~sdfleet.training.state.CheckpointRetention` (keep the newest N).
- :mod:`sdfleet.training.export`: the kohya-format LoRA file with ``ss_*`` metadata.
- :mod:`sdfleet.training.data`: training images, preprocessing, the (seed, epoch) data order.

Only :mod:`~sdfleet.training.config` is imported here, so ``import sdfleet.training`` needs no torch.
"""

from __future__ import annotations

from sdfleet.training.config import LoraTrainSpec, TrainImageRef

__all__ = ["LoraTrainSpec", "TrainImageRef"]
