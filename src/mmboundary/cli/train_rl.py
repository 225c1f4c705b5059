"""`mmboundary train rl`: stage 2 RL calibration (GRPO with R_KA, R_EC, R_CS)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(train_app: typer.Typer) -> None:
    train_app.command("rl")(train_rl_command)


def train_rl_command(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="YAML mirroring RLConfig (see configs/rl_default.yaml)."),
    model: str | None = typer.Option(None, help="Warm-up model folder (overrides the config)."),
    output_dir: str | None = typer.Option(None, help="Output folder (overrides the config)."),
    train_file: str | None = typer.Option(
        None, help="Samples: .jsonl of Samples or a ShapesWorld split .json (overrides)."),
    calibrator: str | None = typer.Option(
        None, help="Fitted ConfidenceCalibrator JSON for the internal confidence i_t (overrides)."),
    clip_model: str | None = typer.Option(
        None, help="CLIP folder for U_CLIPS, needed when the calibrator uses 'clips' (overrides)."),
    images_dir: str | None = typer.Option(
        None, help="Folder the samples' images are resolved in (overrides the config)."),
    max_steps: int | None = typer.Option(None, help="Optimizer steps (overrides the config)."),
    ablation: str | None = typer.Option(
        None, help="wo_ka | wo_ec | wo_cs (zero that reward's weight) | drl (label: RL from the "
                   "vanilla model, give it as --model)."),
    internal_from: str | None = typer.Option(
        None, help="Who scores i_t: 'warmup' (frozen warm-up model) or 'policy'."),
    seed: int | None = typer.Option(None, help="Trainer seed (overrides the config)."),
) -> None:
    """Stage 2: GRPO on the warm-up model with the calibration rewards R_KA, R_EC and R_CS.

    Writes OUTPUT_DIR/model (merged; loads with VLM.from_pretrained), OUTPUT_DIR/reward_log.jsonl
    (every reward's mean and std per logged step) and OUTPUT_DIR/rl_summary.json.
    """
    from rich.console import Console

    from mmboundary.training.rl import train_rl
    from mmboundary.training.rl_config import RLConfig

    console = Console()
    cfg = RLConfig.from_yaml(config, model=model, output_dir=output_dir, train_file=train_file,
                             calibrator=calibrator, clip_model=clip_model, images_dir=images_dir,
                             max_steps=max_steps, ablation=ablation,
                             internal_from=internal_from, seed=seed)
    console.print(f"[bold]RL[/bold] {cfg.model} -> {cfg.output_dir}  "
                  f"(alpha={cfg.alpha}, beta={cfg.beta}, gamma={cfg.gamma}, "
                  f"G={cfg.num_generations}, lr={cfg.learning_rate}, kl_beta={cfg.kl_beta})")
    path = train_rl(cfg)
    summary = Path(cfg.output_dir) / "rl_summary.json"
    from mmboundary.cli.common import is_main_process

    if is_main_process():
        console.print(f"model saved to {path}; reward summary in {summary}")
