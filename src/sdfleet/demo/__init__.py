"""The demo model: a tiny SD 1.x checkpoint trained on CPU on procedural pictures (``sdfleet demo``),
shipped in the package as the default model of ``sdfleet up``."""
