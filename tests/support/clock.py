"""A hand-moved clock, so lease, quota and reaper tests never sleep."""

from __future__ import annotations


class FakeClock:
    """A clock tests move by hand, so lease tests never sleep."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
