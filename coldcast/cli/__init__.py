"""The `coldcast` command line: a thin Typer adapter over the library, one module per area of commands."""

from __future__ import annotations

import os

from coldcast.cli import data, evaluate, kuairand, model, monitor, pipeline, serve  # noqa: F401  (importing a command module registers its commands)
from coldcast.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `coldcast` script."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    app()
