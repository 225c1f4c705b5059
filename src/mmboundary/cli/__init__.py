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

# Order = order in `--help`. A module that does not exist yet is skipped; one that fails to import
# raises (a broken CLI module must not disappear silently).
_AREAS = [
    "demo", "data", "models", "generate", "estimate", "express", "train", "evaluate", "world",
    "annotate",
]


def _register_all() -> None:
    for area in _AREAS:
        try:
            module = importlib.import_module(f"mmboundary.cli.{area}")
        except ModuleNotFoundError as err:
            if err.name == f"mmboundary.cli.{area}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()
