"""``sdfleet models add --kind controlnet`` / ``--kind t2i_adapter`` reads the family a ControlNet, ControlNet
Union or T2I-Adapter steers from the file (either key layout) and refuses a file that is not one of the kind
named; ``sdfleet models convert`` names a converted ControlNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sdfleet.cli import app

torch = pytest.importorskip("torch", reason="the tiny nets need torch")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_models_add_reads_the_family(tiny_models: Any, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    code, out = _cli(
        "models", "add", "canny-sd1", str(tiny_models.controlnet_sd1_file), "--kind", "controlnet", *data
    )
    assert code == 0 and "controlnet, sd1" in out, out
    code, out = _cli(
        "models", "add", "canny-xl", str(tiny_models.controlnet_sdxl_file), "--kind", "controlnet", *data
    )
    assert code == 0 and "controlnet, sdxl" in out, out
    code, out = _cli("models", "add", "oops", str(tiny_models.sd1_file), "--kind", "controlnet", *data)
    assert code != 0 and "an SD checkpoint" in out, out


def test_a_pickled_controlnet_converts_and_is_named(tiny_models: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pth = tmp_path / "control_v11p_sd15_canny.pth"
    torch.save({"state_dict": load_file(str(tiny_models.controlnet_sd1_file))}, str(pth))
    code, out = _cli("models", "convert", str(pth))
    assert code == 0 and "a ControlNet for SD1 (ldm layout)" in out, out


def test_t2i_adapters_and_union_nets_register_with_their_family(tiny_models: Any, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    code, out = _cli(
        "models", "add", "t2i-sd1", str(tiny_models.adapter_sd1_file), "--kind", "t2i_adapter", *data
    )
    assert code == 0 and "t2i_adapter, sd1" in out, out
    code, out = _cli(
        "models", "add", "t2i-xl", str(tiny_models.adapter_sdxl_file), "--kind", "t2i_adapter", *data
    )
    assert code == 0 and "t2i_adapter, sdxl" in out, out
    code, out = _cli(
        "models", "add", "oops", str(tiny_models.adapter_sd1_file), "--kind", "controlnet", *data
    )
    assert code != 0 and "register it with --kind t2i_adapter" in " ".join(out.split()), out
    code, out = _cli(
        "models", "add", "oops2", str(tiny_models.controlnet_sd1_file), "--kind", "t2i_adapter", *data
    )
    assert code != 0 and "register it with --kind controlnet" in " ".join(out.split()), out
    code, out = _cli(
        "models", "add", "union", str(tiny_models.controlnet_union_file), "--kind", "controlnet", *data
    )
    assert code == 0 and "controlnet, sdxl" in out, out
