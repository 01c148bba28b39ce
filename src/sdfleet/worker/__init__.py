"""The worker room: one GPU process that pulls jobs over HTTP, runs them, uploads and reports.

Doors (what other rooms and new job kinds use):

- :class:`sdfleet.worker.runner.Worker` and :func:`sdfleet.worker.runner.run_worker` — the process
  (``sdfleet worker``, tests, benchmarks); ``Worker(kinds=…)`` takes the job-kind registry,
  default :func:`sdfleet.worker.kinds.default_kinds`;
- :mod:`sdfleet.worker.context` — the seam a job kind plugs into: ``RunContext`` (client, cache,
  resolver, engine, settings, stats, uploader, the one reporter), the ``JobRun`` protocol and the
  ``RunFactory`` a kind registers;
- :class:`sdfleet.worker.reports.Reporter` — the only code that ends a held job (fail, release,
  complete, drop, lost), with the error → report ladder and the completion tail;
- :mod:`sdfleet.worker.client` — the worker protocol over HTTP (``WorkerClient``).

Inside: :mod:`~sdfleet.worker.held` (held jobs, their ``Phase``, counters),
:mod:`~sdfleet.worker.outputs` (encoding and upload), :mod:`~sdfleet.worker.kinds` (the
registry) and the kinds
:mod:`~sdfleet.worker.generation` and :mod:`~sdfleet.worker.training`. A kind imports the context,
held, reports and outputs modules, never the runner.
"""
