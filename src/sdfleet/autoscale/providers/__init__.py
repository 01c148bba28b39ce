"""Providers: one small module per platform (``local``, ``kubernetes``, ``salad``, ``command``), each a
:class:`~sdfleet.autoscale.providers.base.Provider`."""

from __future__ import annotations
