"""The `mmboundary` command line: a thin Typer layer over the library.

Each ``cli/<area>.py`` module defines a ``register(app)`` function that adds its commands; those
modules import heavy libraries only inside the command bodies so ``mmboundary --help`` is fast.

Exit codes (``mmboundary.data.failures``; docs/RELIABILITY.md): 0 = at least one record
succeeded (each failed record is an error line naming its id, field and reason); 1 = every record
failed; 2 = the input as a whole cannot be used (unreadable, empty, not an output of ours, a missing
folder, a bad option, a server refusing every request). Errors of kind 2 and 1 are one line on
stderr, never a traceback, with credentials in URLs masked.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

EPILOG = ("Exit codes: 0 = at least one record succeeded (failed records are error lines naming "
          "the record, field and reason); 1 = every record failed; 2 = the input cannot be used "
          "(unreadable, empty, not ours, missing folder, bad option).")


class _OneLineErrors(TyperGroup):
    """The root group: an unusable input or a run where nothing succeeded ends with one line on
    stderr and its exit code (2 or 1) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from mmboundary.data.failures import (
            EXIT_BAD_INPUT,
            EXIT_NOTHING_SUCCEEDED,
            InputError,
            NothingSucceededError,
        )

        try:
            return super().invoke(ctx)
        except (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError) as err:
            _error_line(err)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except NothingSucceededError as err:
            _error_line(err)
            raise typer.Exit(EXIT_NOTHING_SUCCEEDED) from None


def _error_line(err: BaseException) -> None:
    from mmboundary.data.redact import redact_text

    typer.echo(f"error: {redact_text(str(err))}", err=True)


app = typer.Typer(
    cls=_OneLineErrors,
    name="mmboundary",
    help="MMBoundary: teach a vision-language model calibrated step-level confidence statements.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# Order = order in `--help`. Every module must import (a broken CLI module raises, never hides).
_AREAS = [
    "demo", "data", "models", "generate", "estimate", "express", "train", "baselines",
    "evaluate", "judge", "world", "annotate",
]

for _area in _AREAS:
    importlib.import_module(f"mmboundary.cli.{_area}").register(app)


def main() -> None:
    app()
