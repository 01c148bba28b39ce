"""The HTTP room: :func:`sdfleet.api.app.create_app` builds the store and the services once and mounts the
routers (``routes/``: native jobs, worker protocol, models, admin, fleet, system, A1111, the web page).

Doors: ``create_app`` (the only place that touches ``sdfleet.store``), ``deps.AppContext`` (the services a
route may call: ``jobs``, ``queries``, ``preparer``, ``a1111``, ``keys``, ``models``), ``auth`` (keys and
scopes), ``guard`` (Host and cross-site checks), ``checked.CheckedRoute`` (strict JSON at the edge).
Routes hold no transaction; use cases live in ``sdfleet.jobs``.
"""

from __future__ import annotations
