"""Where the shipped demo model lives, and its registry name. No torch here."""

from __future__ import annotations

from pathlib import Path

DEMO_NAME = "sdfleet-demo"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEMO_CHECKPOINT = WEIGHTS_DIR / f"{DEMO_NAME}.safetensors"
DEMO_CONFIGS = WEIGHTS_DIR / DEMO_NAME  # the diffusers configs (for from_single_file(config=…))
DEMO_RESOLUTION = 64


def demo_available() -> bool:
    """True when the package ships the trained demo checkpoint."""
    return DEMO_CHECKPOINT.is_file()
