"""Screen warm-up settings on the validation split, the warm-up alone (issue #12's screen).

Trains the warm-up SFT of a finished `mmboundary demo` run again with SFTConfig overrides (same
records, same vanilla model), answers N validation questions greedily with it and with the
vanilla model, and prints one JSON line: accuracy against the vanilla model's on the same
questions (answers turned right / wrong), the share of chains whose content (statements removed)
is the vanilla model's, and the stated step AUROC / MECE / Brier, all judged by the demo's one
rule set. The validation split is written with N questions of the run's world seed (hash-disjoint
from test, so a larger N never touches the test split). The README's screen table was made with:

    python examples/warmup_screen.py runs/demo-val/seed-0 OUT/plain
    python examples/warmup_screen.py runs/demo-val/seed-0 OUT/kl1 --set distill_weight=1.0
    python examples/warmup_screen.py runs/demo-val/seed-0 OUT/ce3 --set content_weight=3
    python examples/warmup_screen.py runs/demo-val/seed-0 OUT/plain96 --max-new-tokens 96

(`--model DIR` scores an already trained warm-up model instead of training one.)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import yaml

from mmboundary.demo.config import DemoConfig
from mmboundary.demo.stages import step_rules
from mmboundary.demo.systems import _runner
from mmboundary.evaluation.baselines import plain_steps, verbal_confidence
from mmboundary.evaluation.diagnostics import content_change
from mmboundary.evaluation.evaluate import EvalConfig, evaluate_predictions
from mmboundary.shapesworld.scenes import shipped_world_model_path, write_split
from mmboundary.text import default_parser
from mmboundary.training.config import SFTConfig
from mmboundary.training.sft import train_sft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished demo run (its sft-mmboundary/data is used)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="SFTConfig override (YAML value), repeatable")
    ap.add_argument("--n-val", type=int, default=1500)
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="generation budget (default: the run's)")
    ap.add_argument("--model", type=Path, default=None, help="score this warm-up model instead")
    args = ap.parse_args()

    demo = DemoConfig.from_dict(json.loads((args.run / "demo_config.json").read_text()))
    demo = replace(demo, out_dir=str(args.out),
                   max_new_tokens=args.max_new_tokens or demo.max_new_tokens)
    vanilla = Path(demo.vanilla_model) if demo.vanilla_model else shipped_world_model_path()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    model = args.model
    if model is None:
        sft = SFTConfig.from_dict({"preset": "tiny-cpu"}, **{
            "model": str(vanilla), "dataset": str(args.run / "sft-mmboundary" / "data"),
            "output_dir": str(args.out / "run"), "finetuning": demo.sft_finetuning,
            "learning_rate": demo.sft_lr, "num_train_epochs": demo.sft_epochs, "seed": demo.seed,
            "batch_size": 16, "per_device_train_batch_size": 16,
            "distill_weight": demo.sft_distill, "content_weight": demo.sft_content_weight,
            **overrides})
        model = train_sft(sft)
    from mmboundary.shapesworld.scenes import read_split

    val = read_split(write_split(args.out / "world", args.n_val, "validation", seed=demo.seed))
    rules, parser = step_rules(), default_parser()
    van = [plain_steps(r) for r in _runner(vanilla, val, demo, args.out / "vanilla").greedy()]
    raw = _runner(model, val, demo, args.out / "warm-up").greedy()
    preds = verbal_confidence(raw, parser)
    res = evaluate_predictions(val, preds, rules.similarity, rules=rules,
                               config=EvalConfig(bootstrap=0))
    ref = evaluate_predictions(val, van, rules.similarity, rules=rules,
                               config=EvalConfig(bootstrap=0, parse="none"))
    change = content_change(rules, parser, val, van, raw)  # the diagnostics stage's comparison
    m = res.metrics
    print(json.dumps({
        "overrides": overrides, "n": len(val), "max_new_tokens": demo.max_new_tokens,
        "acc": m["accuracy"], "vanilla_acc": ref.metrics["accuracy"],
        "turned_right": change.turned_right, "turned_wrong": change.turned_wrong,
        "content_kept": change.kept, "cut_at_limit": res.counts["cut_at_limit"],
        "step_auroc": m["step_auroc"], "mece": m["mece"], "step_brier": m["step_brier"]}))


if __name__ == "__main__":
    main()
