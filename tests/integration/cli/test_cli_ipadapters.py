"""``sdfleet models add --kind ip_adapter`` / ``--kind image_encoder`` record what the file is — the adapter's
SD family and the encoder it reads, the encoder's family — and refuse a file of another kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sdfleet.cli import app

pytest.importorskip("torch", reason="the tiny models need torch")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_models_add_reads_what_an_adapter_and_an_encoder_are(tiny_models: Any, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    code, out = _cli(
        "models", "add", "ipa", str(tiny_models.ip_adapter_plus_sd1_file), "--kind", "ip_adapter", *data
    )
    assert code == 0 and "ip_adapter, sd1-h32" in out, out
    code, out = _cli(
        "models", "add", "ipa-xl", str(tiny_models.ip_adapter_sdxl_file), "--kind", "ip_adapter", *data
    )
    assert code == 0 and "ip_adapter, sdxl-p24" in out, out
    code, out = _cli(
        "models", "add", "clip", str(tiny_models.image_encoder_file), "--kind", "image_encoder", *data
    )
    assert code == 0 and "image_encoder, clip-24-32" in out, out
    code, out = _cli(
        "models", "add", "oops", str(tiny_models.controlnet_sd1_file), "--kind", "ip_adapter", *data
    )
    assert code != 0 and "a ControlNet" in out, out
    code, out = _cli("models", "add", "oops", str(tiny_models.sd1_file), "--kind", "image_encoder", *data)
    assert code != 0 and "no CLIP vision encoder" in out, out
