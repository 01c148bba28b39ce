"""The trained LoRA as a kohya-format ``.safetensors`` file (what A1111, ComfyUI and diffusers load).

Keys: ``lora_unet_<module>`` for the UNet (diffusers module names with ``_`` for ``.``, the naming
kohya's sd-scripts writes for SD 1.x and every loader maps for SDXL too), ``lora_te_<module>`` for the
text encoder of SD 1.x/2.x, ``lora_te1_``/``lora_te2_`` for SDXL's two; each module has
``.lora_down.weight`` (peft's ``lora_A``, [rank, in]), ``.lora_up.weight`` (``lora_B``, [out, rank]) and
``.alpha`` (the update is scaled by alpha / rank). The header carries kohya's ``ss_*`` training metadata,
``sshs_model_hash`` (the A1111 "addnet" hash of the tensors) and ``sdfleet.*`` keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from sdfleet import __version__
from sdfleet.engine.sd.checkpoints import SD1, SD2, SDXL
from sdfleet.specs.training import LoraTrainSpec

_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])\.(?P<adapter>[^.]+)\.weight$")
BASE_MODEL_VERSION = {SD1: "sd_v1", SD2: "sd_v2", SDXL: "sdxl_base_v1-0"}


def kohya_prefix(component: str, arch: str) -> str:
    """``lora_unet`` / ``lora_te`` / ``lora_te1`` / ``lora_te2`` for a pipeline component."""
    if component == "unet":
        return "lora_unet"
    if arch == SDXL:
        return {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}[component]
    if component != "text_encoder":
        raise ValueError(f"no kohya prefix for {component!r} of {arch}")
    return "lora_te"


def kohya_tensors(
    lora: Mapping[str, torch.Tensor], *, arch: str, alpha: float, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """peft LoRA parameters (``<component>.<module>.lora_A.<adapter>.weight``) → kohya tensors."""
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        component, rest = key.split(".", 1)
        match = _PEFT_KEY.match(rest)
        if match is None:
            raise ValueError(f"not a peft LoRA parameter: {key!r}")
        pairs.setdefault((component, match["module"]), {})[match["kind"]] = value
    out: dict[str, torch.Tensor] = {}
    for (component, module), weights in sorted(pairs.items()):
        if set(weights) != {"A", "B"}:
            raise ValueError(f"incomplete LoRA pair for {component}.{module}")
        if component != "unet" and not module.startswith("text_model."):
            module = "text_model." + module  # transformers 5 CLIPTextModel drops the prefix
        name = f"{kohya_prefix(component, arch)}_{module.replace('.', '_')}"
        out[f"{name}.lora_down.weight"] = weights["A"].detach().to("cpu", dtype).contiguous()
        out[f"{name}.lora_up.weight"] = weights["B"].detach().to("cpu", dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(alpha, dtype=dtype)
    return out


def addnet_hash_of(tensors: Mapping[str, torch.Tensor]) -> str:
    """A1111's LoRA hash (sha256 of the file after its header) of a file holding ``tensors``; the tensor
    bytes do not depend on the metadata, so this is the hash of the written file too."""
    blob = save(dict(tensors))
    (length,) = struct.unpack("<Q", blob[:8])
    return hashlib.sha256(blob[8 + length :]).hexdigest()


def kohya_metadata(
    spec: LoraTrainSpec,
    *,
    arch: str,
    name: str,
    base_model_name: str,
    base_model_sha256: str,
    steps: int,
    captions: Sequence[str],
    class_images: int,
    started_at: float,
    finished_at: float,
    mixed_precision: str,
    final_loss: float | None,
) -> dict[str, str]:
    """kohya's ``ss_*`` keys (strings, as sd-scripts writes them) and ours (``sdfleet.*``)."""
    tags: Counter[str] = Counter()
    for caption in captions:
        tags.update(t.strip() for t in caption.split(",") if t.strip())
    te_lr = spec.text_encoder_lr if spec.text_encoder_lr is not None else spec.learning_rate
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": _num(spec.network_alpha),
        "ss_network_args": json.dumps({}),
        "ss_base_model_version": BASE_MODEL_VERSION.get(arch, arch),
        "ss_v2": str(arch == SD2),
        "ss_sd_model_name": base_model_name,
        "ss_new_sd_model_hash": base_model_sha256,
        "ss_sd_model_hash": base_model_sha256[:8],
        "ss_output_name": name,
        "ss_training_comment": f"trigger word: {spec.trigger_word}" if spec.trigger_word else "",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(spec.steps),
        "ss_epoch": str(max(1, -(-steps * spec.batch_size // max(1, len(captions))))),
        "ss_num_train_images": str(len(captions)),
        "ss_num_reg_images": str(class_images),
        "ss_batch_size_per_device": str(spec.batch_size),
        "ss_total_batch_size": str(spec.batch_size),
        "ss_gradient_accumulation_steps": "1",
        "ss_learning_rate": _num(spec.learning_rate),
        "ss_unet_lr": _num(spec.learning_rate),
        "ss_text_encoder_lr": _num(te_lr) if spec.train_text_encoder else "0",
        "ss_network_train_unet_only": str(not spec.train_text_encoder),
        "ss_lr_scheduler": spec.lr_scheduler,
        "ss_lr_warmup_steps": str(spec.lr_warmup_steps),
        "ss_optimizer": "torch.optim.adamw.AdamW",
        "ss_max_grad_norm": _num(spec.max_grad_norm),
        "ss_noise_offset": _num(spec.noise_offset),
        "ss_prior_loss_weight": _num(spec.prior_loss_weight if spec.prior_preservation else 0.0),
        "ss_resolution": f"({spec.resolution}, {spec.resolution})",
        "ss_flip_aug": str(spec.random_flip),
        "ss_seed": str(spec.seed),
        "ss_mixed_precision": mixed_precision,
        "ss_training_started_at": _num(started_at),
        "ss_training_finished_at": _num(finished_at),
        "ss_tag_frequency": json.dumps({"instance": dict(tags)}),
        "ss_caption_dropout_rate": "0.0",
        "sdfleet.version": __version__,
        "sdfleet.arch": arch,
        "sdfleet.trigger_word": spec.trigger_word or "",
        "sdfleet.instance_prompt": spec.instance_prompt,
        "sdfleet.spec": spec.model_dump_json(),
    }
    if final_loss is not None:
        meta["sdfleet.final_loss"] = _num(final_loss)
    return meta


def write_kohya_lora(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write the LoRA file atomically, with ``sshs_model_hash`` added to ``metadata``."""
    meta = {"format": "pt", **metadata}
    meta.setdefault("sshs_model_hash", addnet_hash_of(tensors))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file(dict(tensors), str(partial), metadata=meta)
    os.replace(partial, path)
    return path


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
