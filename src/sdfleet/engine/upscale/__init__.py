"""Upscalers: model nets (ESRGAN / Real-ESRGAN RRDB, Real-ESRGAN Compact SRVGG; spandrel when installed),
tiled inference, and A1111's Extras pipeline (:mod:`sdfleet.engine.upscale.extras`). Importing the package
loads no torch."""
