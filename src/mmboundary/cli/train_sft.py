"""`mmboundary train sft`: stage-1 confidence-expression warm-up (TRL SFTTrainer, LoRA by default)."""

from __future__ import annotations

from pathlib import Path

import typer


def sft_command(
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="YAML of SFTConfig fields (see configs/sft_*.yaml)."),
    preset: str | None = typer.Option(None, "--preset",
                                      help="Named overrides: paper-7b (defaults) or tiny-cpu."),
    model: str | None = typer.Option(None, "--model", help="Vanilla model folder."),
    dataset: str | None = typer.Option(None, "--dataset",
                                       help="Output folder of `mmboundary build-sft`."),
    output_dir: str | None = typer.Option(None, "--output-dir",
                                          help="Where checkpoints, adapter and model/ go."),
    finetuning: str | None = typer.Option(None, "--finetuning", help="lora (default) or full."),
    learning_rate: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Effective batch size."),
    num_epochs: float | None = typer.Option(None, "--epochs", help="Training epochs."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps (>0)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
) -> None:
    """Fine-tune the vanilla model on its own responses with statements (loss on the assistant
    turn only). Works under `accelerate launch`. Every SFTConfig field is documented in
    `mmboundary.training.config`; command-line options override the YAML."""
    from rich import print as rprint

    from mmboundary.training.config import SFTConfig
    from mmboundary.training.sft import train_sft

    overrides = dict(model=model, dataset=dataset, output_dir=output_dir, finetuning=finetuning,
                     learning_rate=learning_rate, batch_size=batch_size, num_train_epochs=num_epochs,
                     max_steps=max_steps, device=device, seed=seed)
    raw: dict = {"preset": preset} if preset else {}
    if config is not None:
        import yaml

        raw = {**raw, **(yaml.safe_load(config.read_text()) or {})}
    try:
        cfg = SFTConfig.from_dict(raw, where=str(config or "options"), **overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    path = train_sft(cfg)
    from mmboundary.cli.common import is_main_process

    if is_main_process():
        rprint(f"[green]stage-1 model saved to {path}[/green] (loss log: "
               f"{Path(cfg.output_dir) / 'train_log.json'})")


def register(train_app: typer.Typer) -> None:
    train_app.command("sft")(sft_command)
