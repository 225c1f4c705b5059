"""Re-teach the statements of an RL model on its own answers, with its own probe (README, "Where
the probe teacher's accuracy goes": a screen, not a demo stage).

After RL that trains the content alone (`mmboundary demo --sft-teacher probe --rl-credit step
--rl-weights 1,0,0 --rl-steps 100`) the statements are the warm-up's while the content got better,
so they end up under-confident. This script gives the RL model's statements a second teacher,
with the commands a real-model user runs:

1. `mmboundary estimate`: the RL model answers the run's train questions greedily (LNLP and MTE
   only: the probe replaces their levels, they are kept only where a step has no content token);
2. `mmboundary estimate probe`: each step gets the level of a probe on the RL model's own hidden
   state, cross-fitted over the questions;
3. the SFT set with one statement per level (as the demo's warm-up), and SFT **from the RL model**
   with the demo's warm-up settings but no distillation (the RL model has never read a chain
   without statements, so it cannot be the content teacher for one);
4. `examples/warmup_screen.py --model`: the re-taught model answers N validation questions
   greedily; accuracy against the vanilla model, stated step AUROC, MECE.

    python examples/reteach_statements.py RUN OUT          # RUN: a finished demo run
    python examples/warmup_screen.py RUN OUT/reference --model RUN/rl/run/model   # the RL model

Options: `--from warm-up` re-teaches the run's warm-up model instead of its RL model; `--set
FIELD=VALUE` overrides the SFT config (README's seventh round: `--set trainable=statement-rows`
or `statement-choice-rows`, only the statement tokens' output rows trained); `--levels FILE`
reuses the `estimates-probe.jsonl` of an earlier OUT (steps 1-2 skipped).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from mmboundary.demo.config import DemoConfig
from mmboundary.text.statements import default_bank
from mmboundary.training.config import SFTConfig
from mmboundary.training.sft import train_sft
from mmboundary.training.sft_data import build_sft


def run(*args: str | Path) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished `mmboundary demo` run (its rl/run/model)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-val", type=int, default=1500)
    ap.add_argument("--from", dest="stage", choices=("rl", "warm-up"), default="rl",
                    help="re-teach the run's RL model (default) or its warm-up model")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="SFTConfig override (YAML value), repeatable, e.g. "
                         "trainable=statement-rows")
    ap.add_argument("--levels", type=Path, default=None,
                    help="reuse the estimates-probe.jsonl of an earlier OUT (skips steps 1-2)")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    demo = DemoConfig.from_dict(json.loads((args.run / "demo_config.json").read_text()))
    model = args.run / ("rl" if args.stage == "rl" else "sft-mmboundary") / "run" / "model"
    train = args.run / "world" / "train.json"
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "mmboundary"]
    device = ["--device", "cpu", "--dtype", "float32", "--batch-size", str(demo.batch_size)]
    levels = args.levels or args.out / "estimates-probe.jsonl"
    if args.levels is None:
        run(*cli, "estimate", "--model", model, "--data", train, "--dataset", "shapes", "--out",
            args.out / "estimates.jsonl", "--estimators", "lnlp,mte", "--level-rule", "accuracy",
            "--max-new-tokens", str(demo.max_new_tokens), "--no-progress", *device)
        run(*cli, "estimate", "probe", "--model", model, "--responses",
            args.out / "estimates.jsonl", "--data", train, "--dataset", "shapes", "--out", levels,
            "--seed", str(demo.seed), *device)
    data, summary, _ = build_sft(levels, train, args.out / "data",
                                 seed=demo.seed,
                                 bank=default_bank().subset(demo.statements_per_level or 1))
    print(f"SFT set: {summary.records} records, levels {summary.levels}", flush=True)
    sft = SFTConfig.from_dict({"preset": "tiny-cpu"}, **{
        "model": str(model), "dataset": str(data), "output_dir": str(args.out / "run"),
        "finetuning": demo.sft_finetuning, "learning_rate": demo.sft_lr, "distill_weight": 0.0,
        "num_train_epochs": demo.sft_epochs, "seed": demo.seed, "batch_size": 16,
        "per_device_train_batch_size": 16, **overrides})
    retaught = train_sft(sft)
    run(sys.executable, Path(__file__).with_name("warmup_screen.py"), args.run,
        args.out / "screen", "--model", retaught, "--n-val", str(args.n_val))


if __name__ == "__main__":
    main()
