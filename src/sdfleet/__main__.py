"""`python -m sdfleet` runs the CLI."""

from __future__ import annotations

from sdfleet.cli import main

main()
