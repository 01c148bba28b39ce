"""The model-free ControlNet preprocessors ("annotators") on OpenCV and numpy, torch-free: the engine
runs them inline (:mod:`sdfleet.engine.controlnet.preprocess`), and the job service runs them in the API
process for ``/controlnet/detect`` (:mod:`sdfleet.jobs.detect`) — a room of their own so neither needs the
other's package. ``run`` is the entry (:func:`~sdfleet.annotators.run.preprocess`), ``filters`` the
algorithms, ``pixels`` the resize-and-pad they share. Importing this package imports nothing heavy."""
