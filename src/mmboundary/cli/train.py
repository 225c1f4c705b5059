"""`mmboundary train sft|rl`: the group; each stage's command lives in its own module."""

from __future__ import annotations

import importlib

import typer


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train: stage 1 warm-up (sft) and stage 2 RL calibration (rl).",
                            no_args_is_help=True)
    for stage in ("train_sft", "train_rl"):
        try:
            module = importlib.import_module(f"mmboundary.cli.{stage}")
        except ModuleNotFoundError as err:
            if err.name == f"mmboundary.cli.{stage}":
                continue
            raise
        module.register(train_app)
    app.add_typer(train_app, name="train")
