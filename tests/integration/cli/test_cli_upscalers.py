"""``sdfleet models add --kind upscaler`` reads the net's family and scale from the file; ``sdfleet models
convert`` turns a pickled upscaler into safetensors through the weights-only unpickler and refuses one that
needs code to load; a pickle is never registered as an upscaler."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdfleet.cli import app

torch = pytest.importorskip("torch", reason="writing the tiny nets needs torch")

from sdfleet.testing.tiny_models import write_tiny_upscaler  # noqa: E402


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_models_add_reads_family_and_scale(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    rrdb = write_tiny_upscaler(tmp_path / "4x-UltraSharp.safetensors", "esrgan", layout="old", scale=8)
    compact = write_tiny_upscaler(tmp_path / "realesr-general-x4v3.safetensors", "srvgg")
    code, out = _cli("models", "add", "sharp", str(rrdb), "--kind", "upscaler", *data)
    assert code == 0, out
    code, out = _cli("models", "add", "compact", str(compact), "--kind", "upscaler", *data)
    assert code == 0, out
    code, out = _cli("models", "list", "--kind", "upscaler", *data)
    assert code == 0 and "esrgan ×8" in out and "srvgg ×4" in out, out
    # not an upscaler: refused, with the reason
    bogus = tmp_path / "bogus.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(bogus))
    code, out = _cli("models", "add", "bogus", str(bogus), "--kind", "upscaler", *data)
    assert code != 0 and "not an ESRGAN" in out


def test_pickles_convert_as_weights_only(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = ["--data-dir", str(tmp_path / "data")]
    net = write_tiny_upscaler(tmp_path / "net.safetensors", "srvgg")
    pth = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": load_file(str(net))}, str(pth))
    code, out = _cli("models", "add", "pickled", str(pth), "--kind", "upscaler", *data)
    assert code != 0 and "convert" in out
    code, out = _cli("models", "convert", str(pth))
    assert code == 0 and "srvgg ×4" in out, out
    converted = pth.with_suffix(".safetensors")
    assert set(load_file(str(converted))) == set(load_file(str(net)))
    code, out = _cli("models", "add", "converted", str(converted), "--kind", "upscaler", *data)
    assert code == 0, out

    evil = tmp_path / "evil.pth"
    torch.save({"params": {"x": object()}}, str(evil))
    code, out = _cli("models", "convert", str(evil))
    assert code != 0 and "weights-only" in out
    assert not evil.with_suffix(".safetensors").exists()
