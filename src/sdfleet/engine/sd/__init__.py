"""The diffusers engine for Stable Diffusion 1.x, 2.x and SDXL (torch is imported lazily by callers)."""

from __future__ import annotations
