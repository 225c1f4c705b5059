"""The `mmboundary` command line: a thin Typer layer over the library.

Each ``cli/<area>.py`` module defines a ``register(app)`` function that adds its commands; those
modules import heavy libraries only inside the command bodies so ``mmboundary --help`` is fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="mmboundary",
    help="MMBoundary: teach a vision-language model calibrated step-level confidence statements.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# Order = order in `--help`. Every module must import (a broken CLI module raises, never hides).
_AREAS = [
    "demo", "data", "models", "generate", "estimate", "express", "train", "evaluate", "world",
    "annotate",
]

for _area in _AREAS:
    importlib.import_module(f"mmboundary.cli.{_area}").register(app)


def main() -> None:
    app()
