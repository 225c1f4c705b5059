"""`mmboundary demo`: MMBoundary end to end on ShapesWorld, on a CPU, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Smoke run of every stage (~1-2 min): "
                                   "few samples, 2 RL steps. Same as --preset quick."),
        preset: str = typer.Option("default", help="default (~10 min on 2 cores), quick, or "
                                   "large (more data and RL; about an hour)."),
        config: Path | None = typer.Option(None, help="YAML of DemoConfig fields (may name a "
                                           "preset:); options given here override it."),
        out: Path | None = typer.Option(None, help="Output folder (default runs/demo[-quick|-large])."),
        seed: int | None = typer.Option(None, help="World and training seed (default 0)."),
        seeds: int = typer.Option(1, "--seeds", help="Run N seeds (seed, seed+1, ...) into "
                                  "OUT/seed-<k> and write one report over them in OUT/report "
                                  "(every metric as mean +- sd over seeds)."),
        split: str | None = typer.Option(None, "--split", help="Evaluate on 'test' (default; "
                                         "report once) or 'validation' (choose settings)."),
        threads: int | None = typer.Option(None, help="torch CPU threads (default 2)."),
        fresh: bool = typer.Option(False, "--fresh", help="Redo every stage instead of "
                                   "resuming the finished ones in the output folder."),
    ) -> None:
        """Run the whole method on ShapesWorld and write a Table-1-style report.

        The shipped world VLM (vanilla) answers training questions; each of its steps gets an
        internal confidence (LNLP, MTE, TokenSAR, CLIPScore, normalised and fused into 5 levels);
        the warm-up SFT teaches it to say them; RL with R_KA + R_EC + R_CS calibrates the
        statements; vanilla, baselines (constant, token probability, internal C, DPV, DPS, SC,
        Multisample), MMBoundary and its ablations are evaluated (ECE, MECE, Acc, F1, AUROC,
        Brier, AURC, coverage, with 95% bootstrap intervals) on the test split; the constant
        baselines are fitted on the validation split; the report (Markdown, CSV, PNG, HTML)
        lands in OUT/report.
        """
        from dataclasses import replace

        from mmboundary.demo.config import PRESETS, DemoConfig
        from mmboundary.demo.run import run_demo_seeds

        name = "quick" if quick else preset
        if name not in PRESETS:
            raise typer.BadParameter(f"unknown preset {name!r}; expected {sorted(PRESETS)}")
        cfg = DemoConfig.from_yaml(config) if config is not None else PRESETS[name]
        overrides = {"out_dir": str(out) if out else None, "seed": seed, "threads": threads,
                     "eval_split": split}
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None}, fresh=fresh)
        run_demo_seeds(cfg, seeds)
