"""Test support shared by the test suites, benchmarks and demos (tiny offline models)."""

from __future__ import annotations
