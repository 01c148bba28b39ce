"""The ``sdfleet`` command: the composition root. Builds settings, stores and engines from
options and environment, and hands them down; nothing else reads configuration.

Doors: :data:`app` (the Typer app, for tests and ``CliRunner``) and :func:`main` (the console
script and ``python -m sdfleet``). One module a command group: :mod:`.app` (the root app, shared
options and helpers), :mod:`.serve` (serve, worker, up, migrate), :mod:`.keys`, :mod:`.tenants`,
:mod:`.models` and :mod:`.client` (submit, train); ``bench`` and ``demo`` join in :func:`main`.
"""

from __future__ import annotations

from sdfleet.cli import client, serve
from sdfleet.cli.app import app
from sdfleet.cli.keys import keys_app
from sdfleet.cli.models import models_app
from sdfleet.cli.tenants import tenants_app

__all__ = ["app", "main"]

app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(models_app, name="models")
for command in (serve.serve, serve.worker, serve.up, serve.migrate, client.submit, client.train):
    app.command()(command)


def _register_extras() -> None:
    from sdfleet.bench.cli import register
    from sdfleet.demo.cli import demo_app

    register(app)
    app.add_typer(demo_app, name="demo")


def main() -> None:
    _register_extras()
    app()
