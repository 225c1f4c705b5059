"""`mmboundary train sft`: stage-1 confidence-expression warm-up (TRL SFTTrainer, LoRA by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.dataclass_options import load_config, with_field_options
from mmboundary.training.config import SFTConfig

#: Options that keep their short names besides TRL's.
FLAGS = {"learning_rate": ("--learning-rate", "--lr"),
         "num_train_epochs": ("--num-train-epochs", "--epochs")}


def sft_command(
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="YAML of SFTConfig fields (see configs/sft_*.yaml)."),
    preset: str | None = typer.Option(None, "--preset", help="Named overrides: "
                                      f"{', '.join(SFTConfig.PRESETS)} (paper-7b = the "
                                      "defaults). Default: the --config file's preset: key."),
    fields: dict[str, Any] | None = None,
) -> None:
    """Fine-tune the vanilla model on its own responses with statements (loss on the assistant
    turn only). Works under `accelerate launch`. Every SFTConfig field is an option (documented
    in `mmboundary.training.config`); an option given here overrides the YAML, which overrides
    the preset."""
    from rich import print as rprint

    from mmboundary.training.sft import train_sft

    cfg = load_config(SFTConfig, config, preset, fields or {})
    path = train_sft(cfg)
    from mmboundary.cli.common import is_main_process

    if is_main_process():
        rprint(f"[green]stage-1 model saved to {path}[/green] (loss log: "
               f"{Path(cfg.output_dir) / 'train_log.json'})")


def register(train_app: typer.Typer) -> None:
    train_app.command("sft")(with_field_options(
        SFTConfig, flags=FLAGS, panel="SFTConfig fields (override --config and --preset)")(
        sft_command))
