"""Training checkpoints: everything needed to continue a LoRA training run exactly where it stopped.

One checkpoint is one ``.safetensors`` file — nothing in it is ever unpickled:

- tensors
    - ``lora.<component>.<parameter>``: the trainable LoRA weights (float32), ``component`` being
      ``unet``, ``text_encoder`` or ``text_encoder_2`` and ``parameter`` the peft parameter name
      (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.default.weight``);
    - ``optimizer.<index>.<key>``: the optimizer's per-parameter state (AdamW: ``step``, ``exp_avg``,
      ``exp_avg_sq``), ``index`` being the parameter's position in the optimizer;
    - ``rng.generator`` (the trainer's own CPU generator: noise, timesteps, latent samples),
      ``rng.torch_cpu``, ``rng.cuda.<device>`` and ``rng.numpy`` (MT19937 key): uint8 tensors;
- metadata (``__metadata__``, strings): ``format`` = ``pt``, and ``sdfleet.train_state`` = JSON with
  ``version``, ``step``, ``total_steps``, ``samples_seen``, ``info`` (architecture, base model hash,
  training fingerprint of the spec, last loss, …), ``optimizer`` (param groups and non-tensor state),
  ``lr_scheduler`` (its ``state_dict``), ``grad_scaler`` (or null) and ``rng`` (python's ``random`` state
  and the scalar part of numpy's).

The data order is a function of (seed, epoch) and the step (see :mod:`sdfleet.training.data`), so the
step alone places the data stream; ``samples_seen`` is recorded as a check.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sdfleet.engine.sd.checkpoints import read_header
from sdfleet.errors import ValidationError

STATE_KEY = "sdfleet.train_state"
FORMAT_VERSION = 1
CHECKPOINT_NAME = re.compile(r"^step-(\d{8})\.safetensors$")


def checkpoint_name(step: int) -> str:
    """``step-00000020.safetensors``: checkpoint file names sort by step."""
    return f"step-{step:08d}.safetensors"


# ------------------------------------------------------------------------------------------------ RNG


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


@dataclass(slots=True)
class RngState:
    """Every random number generator a training step may touch."""

    generator: torch.Tensor
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor]
    python: Any
    numpy_key: torch.Tensor
    numpy_rest: list[Any]

    @classmethod
    def capture(cls, generator: torch.Generator) -> RngState:
        """The current state of ``generator`` and of torch's (CPU, CUDA), python's and numpy's global ones."""
        np_state = np.random.get_state(legacy=True)
        assert isinstance(np_state, tuple)
        name, key, pos, has_gauss, cached = np_state
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        return cls(
            generator=generator.get_state().clone(),
            torch_cpu=torch.get_rng_state().clone(),
            cuda=cuda,
            python=random.getstate(),
            numpy_key=_bytes_tensor(np.asarray(key, dtype="<u4").tobytes()),
            numpy_rest=[str(name), int(pos), int(has_gauss), float(cached)],
        )

    def restore(self, generator: torch.Generator) -> None:
        """Put every generator back into this state (CUDA states only when the counts of devices match)."""
        generator.set_state(self.generator)
        torch.set_rng_state(self.torch_cpu)
        if self.cuda and torch.cuda.is_available() and len(self.cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda)
        version, internal, gauss = self.python
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
        key = np.frombuffer(self.numpy_key.numpy().tobytes(), dtype="<u4").astype(np.uint32)
        name, pos, has_gauss, cached = self.numpy_rest
        np.random.set_state((str(name), key, int(pos), int(has_gauss), float(cached)))

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "rng.generator": self.generator,
            "rng.torch_cpu": self.torch_cpu,
            "rng.numpy": self.numpy_key,
        }
        out.update({f"rng.cuda.{i}": s for i, s in enumerate(self.cuda)})
        return out

    def meta(self) -> dict[str, Any]:
        version, internal, gauss = self.python
        return {"python": [version, list(internal), gauss], "numpy": self.numpy_rest}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> RngState:
        cuda = []
        index = 0
        while f"rng.cuda.{index}" in tensors:
            cuda.append(tensors[f"rng.cuda.{index}"])
            index += 1
        return cls(
            generator=tensors["rng.generator"],
            torch_cpu=tensors["rng.torch_cpu"],
            cuda=cuda,
            python=meta["python"],
            numpy_key=tensors["rng.numpy"],
            numpy_rest=list(meta["numpy"]),
        )


# ------------------------------------------------------------------------------------------------ state


@dataclass(slots=True)
class TrainState:
    """A complete snapshot of a training run after ``step`` optimizer steps (see the module doc)."""

    step: int
    total_steps: int
    samples_seen: int
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    grad_scaler: dict[str, Any] | None
    rng: RngState
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ writing
    def save(self, path: Path) -> Path:
        """Write the checkpoint atomically (a temporary file renamed into place)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, value in self.lora.items():
            tensors[f"lora.{name}"] = value
        optimizer_state: dict[str, dict[str, Any]] = {}
        for index, per_param in self.optimizer["state"].items():
            scalars: dict[str, Any] = {}
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{key}"] = value
                else:
                    scalars[key] = value
            optimizer_state[str(index)] = scalars
        tensors.update(self.rng.tensors())
        body = {
            "version": FORMAT_VERSION,
            "step": self.step,
            "total_steps": self.total_steps,
            "samples_seen": self.samples_seen,
            "saved_at": time.time(),
            "info": self.info,
            "optimizer": {
                "param_groups": self.optimizer["param_groups"],
                "state": optimizer_state,
            },
            "lr_scheduler": self.lr_scheduler,
            "grad_scaler": self.grad_scaler,
            "rng": self.rng.meta(),
        }
        ready = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        save_file(ready, str(partial), metadata={"format": "pt", STATE_KEY: json.dumps(body)})
        os.replace(partial, path)
        self.path = path
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path: Path | str) -> TrainState:
        """Read a checkpoint written by :meth:`save` (safetensors + JSON only; nothing is unpickled)."""
        path = Path(path)
        body = read_state_info(path)
        try:
            tensors = load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValidationError(f"checkpoint {path.name} is unreadable: {exc}", field="resume") from exc
        lora = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
        state: dict[int, dict[str, Any]] = {}
        for index, scalars in body["optimizer"]["state"].items():
            state[int(index)] = dict(scalars)
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        return cls(
            step=int(body["step"]),
            total_steps=int(body["total_steps"]),
            samples_seen=int(body["samples_seen"]),
            lora=lora,
            optimizer={"state": state, "param_groups": body["optimizer"]["param_groups"]},
            lr_scheduler=dict(body["lr_scheduler"]),
            grad_scaler=body.get("grad_scaler"),
            rng=RngState.from_parts(tensors, body["rng"]),
            info=dict(body.get("info") or {}),
            path=path,
        )


def read_state_info(path: Path) -> dict[str, Any]:
    """The JSON part of a checkpoint (step, total, info…) from its header, without loading any tensor."""
    try:
        header = read_header(path)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="resume") from exc
    raw = header.metadata.get(STATE_KEY)
    if not raw:
        raise ValidationError(f"{path.name} is not an sdfleet training checkpoint", field="resume")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"{path.name}: corrupt training state: {exc}", field="resume") from exc
    if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
        version = body.get("version") if isinstance(body, dict) else None
        raise ValidationError(
            f"{path.name}: training checkpoint format {version!r} is not {FORMAT_VERSION}", field="resume"
        )
    return body


def local_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


# ------------------------------------------------------------------------------------------------ keep N

K = TypeVar("K", bound=Hashable)


class CheckpointRetention(Generic[K]):
    """Which checkpoints to delete so only the newest ``keep`` remain: ``add(step, key)`` returns the
    keys that fell out (for the job system: blob keys to delete after the new one is uploaded)."""

    def __init__(self, keep: int, existing: list[tuple[int, K]] | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        self._items: list[tuple[int, K]] = sorted(existing or [], key=lambda item: item[0])

    def add(self, step: int, key: K) -> list[K]:
        """Record the checkpoint of ``step``; return the keys of older ones beyond the newest ``keep``."""
        self._items = [item for item in self._items if item[1] != key]
        self._items.append((step, key))
        self._items.sort(key=lambda item: item[0])
        dropped = self._items[: -self.keep]
        self._items = self._items[-self.keep :]
        return [k for _, k in dropped]

    @property
    def kept(self) -> list[K]:
        """The retained keys, oldest first."""
        return [k for _, k in self._items]

    @property
    def latest(self) -> K | None:
        """The newest key (None before the first checkpoint)."""
        return self._items[-1][1] if self._items else None

    @property
    def latest_step(self) -> int | None:
        return self._items[-1][0] if self._items else None
