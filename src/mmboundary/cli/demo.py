"""`mmboundary demo`: MMBoundary end to end on ShapesWorld, on a CPU, in minutes.

Every ``DemoConfig`` field is an option (``cli/dataclass_options.py``); an option given here
overrides the ``--config`` YAML, which overrides the preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmboundary.cli.dataclass_options import load_config, with_field_options

#: Options that keep their old names: ``--out`` is ``out_dir``, ``--split`` is ``eval_split``.
FLAGS = {"out_dir": ("--out", "--out-dir"), "eval_split": ("--split", "--eval-split")}


def register(app: typer.Typer) -> None:
    from mmboundary.demo.config import DemoConfig

    @app.command()
    @with_field_options(DemoConfig, flags=FLAGS,
                        panel="DemoConfig fields (override --config and --preset)")
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Smoke run of every stage (~1-2 min): "
                                   "few samples, 2 RL steps. Same as --preset quick."),
        preset: str | None = typer.Option(
            None, help=f"Named overrides, one of {', '.join(DemoConfig.PRESETS)}: default (~10 "
            "min on 2 cores), quick (= --quick), large (more data and RL; ~13 min), table1 (every "
            "ablation row of the paper's Table 1) or probe (statements taught a probe on the "
            "model's hidden state: better calibrated, ~.01 less accurate; README). "
            "Default: the --config file's preset: key, else default."),
        config: Path | None = typer.Option(None, help="YAML of DemoConfig fields (may name a "
                                           "preset:); options given here override it."),
        seeds: int = typer.Option(1, "--seeds", help="Run N seeds (seed, seed+1, ...) into "
                                  "OUT/seed-<k> and write one report over them in OUT/report "
                                  "(every metric as mean +- sd over seeds)."),
        fields: dict[str, Any] | None = None,
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
        from mmboundary.demo.run import run_demo_seeds

        if quick and preset not in (None, "quick"):
            raise typer.BadParameter(f"--quick is --preset quick, not --preset {preset}")
        cfg = load_config(DemoConfig, config, "quick" if quick else preset, fields or {})
        run_demo_seeds(cfg, seeds)
