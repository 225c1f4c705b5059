"""`mmboundary train rl`: stage 2 RL calibration (GRPO with R_KA, R_EC, R_CS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.dataclass_options import load_config, with_field_options
from mmboundary.training.rl_config import RLConfig


def register(train_app: typer.Typer) -> None:
    train_app.command("rl")(with_field_options(
        RLConfig, panel="RLConfig fields (override --config)")(train_rl_command))


def train_rl_command(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="YAML mirroring RLConfig (see configs/rl_default.yaml)."),
    fields: dict[str, Any] | None = None,
) -> None:
    """Stage 2: GRPO on the warm-up model with the calibration rewards R_KA, R_EC and R_CS.

    Writes OUTPUT_DIR/model (merged; loads with VLM.from_pretrained), OUTPUT_DIR/reward_log.jsonl
    (every reward's mean and std per logged step) and OUTPUT_DIR/rl_summary.json. Every RLConfig
    field is an option (documented in `mmboundary.training.rl_config`); an option given here
    overrides the YAML.
    """
    from rich.console import Console

    from mmboundary.training.rl import train_rl

    console = Console()
    cfg = load_config(RLConfig, config, None, fields or {})
    console.print(f"[bold]RL[/bold] {cfg.model} -> {cfg.output_dir}  "
                  f"(alpha={cfg.alpha}, beta={cfg.beta}, gamma={cfg.gamma}, "
                  f"G={cfg.num_generations}, lr={cfg.learning_rate}, kl_beta={cfg.kl_beta})")
    extra = {}
    if cfg.eval_every > 0:  # held-out curves: the evaluation metrics besides the rewards
        from mmboundary.evaluation.heldout import heldout_metrics

        extra["heldout_metrics"] = heldout_metrics
    path = train_rl(cfg, **extra)
    summary = Path(cfg.output_dir) / "rl_summary.json"
    from mmboundary.cli.common import is_main_process

    if is_main_process():
        console.print(f"model saved to {path}; reward summary in {summary}")
