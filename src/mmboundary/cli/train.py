"""`mmboundary train sft|rl`: the group; each stage's command lives in its own module."""

from __future__ import annotations

import typer

from mmboundary.cli import train_rl, train_sft


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train: stage 1 warm-up (sft) and stage 2 RL calibration (rl).",
                            no_args_is_help=True)
    train_sft.register(train_app)
    train_rl.register(train_app)
    app.add_typer(train_app, name="train")
