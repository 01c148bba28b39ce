"""``sdfleet bench``: a load generator with simulated workers, and its report. It talks to an orchestrator
over the public HTTP API only (``load.py``, ``sim.py``), and reports from the outside (``report.py``)."""

from __future__ import annotations
