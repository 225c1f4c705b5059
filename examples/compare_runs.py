"""Compare two finished `mmboundary demo` runs on the same questions (README, "Where the probe
teacher's accuracy goes").

For each system both runs evaluated (the MMBoundary row and its warm-up alone), prints:
- the paired accuracy difference A - B over the questions, with a 95% bootstrap interval (2000
  resamples of the questions) and the number of questions the two answer differently;
- where each run's chains leave the vanilla model's: the share whose content (statements
  removed, step by step) is the vanilla model's, how many first differ at step 1, before any
  statement was written, and, for the others, the value of the statement just before the first
  differing step against how often a statement of that value is followed by anything.

    python examples/compare_runs.py RUN_A RUN_B [--split validation]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mmboundary.data.io import read_responses
from mmboundary.demo.stages import step_rules
from mmboundary.evaluation.diagnostics import content_change
from mmboundary.shapesworld.scenes import read_split
from mmboundary.text import default_parser

SYSTEMS = {"warm-up alone": "mmboundary-w-o-rl--warm-up-only",
           "MMBoundary": "mmboundary--ours--warm-up---rl"}


def correct(run: Path, split: str, name: str) -> dict[str, float]:
    data = json.loads((run / f"metrics-{split}" / f"{name}.json").read_text())
    return {s["sample_id"]: float(bool(s["answer_correct"])) for s in data["samples"]}


def paired(a: dict[str, float], b: dict[str, float], seed: int = 0) -> str:
    ids = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in ids])
    rng = np.random.default_rng(seed)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    return (f"{d.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}]"
            f" over {len(ids)} questions, {int((d != 0).sum())} answered differently")


def divergence(run: Path, split: str, name: str) -> str:
    parser = default_parser()
    folder = run / f"predictions-{split}"
    base_runs = {r.sample_id: r for r in read_responses(folder / "vanilla.jsonl")}
    trained_runs = {r.sample_id: r for r in read_responses(folder / name / "vanilla.jsonl")}
    samples = read_split(run / "world" / f"{split}.json")
    change = content_change(step_rules(), parser, samples, [base_runs[s.id] for s in samples],
                            [trained_runs[s.id] for s in samples])  # the diagnostics' comparison
    vanilla = {k: r.text for k, r in base_runs.items()}
    trained = {k: r.text for k, r in trained_runs.items()}
    first = 0
    before, followed = Counter(), Counter()  # statement value -> next differs / anything next
    for sid, text in trained.items():
        steps = parser.parse(text)
        mine = [s.content.strip().rstrip(".!?;:, ") for s in steps]
        base = [s.content.strip().rstrip(".!?;:, ") for s in parser.parse(vanilla[sid])]
        if mine == base:
            followed.update(step.expressed_confidence for step in steps[:-1])
            continue
        k = next((i for i in range(min(len(mine), len(base))) if mine[i] != base[i]),
                 min(len(mine), len(base)))  # the first differing step (or the shorter's end)
        first += k == 0
        followed.update(step.expressed_confidence for step in steps[:k])
        if k > 0:
            before[steps[k - 1].expressed_confidence] += 1
    rate = ", ".join(f"{v}: {before[v]}/{followed[v]}" for v in sorted(followed, key=str))
    return (f"content kept {round(change.kept * change.n)}/{change.n} (turned right "
            f"{change.turned_right}, wrong "
            f"{change.turned_wrong}); first differs at step 1: {first}; "
            f"after a statement of value (differing next / followed by a step): {rate}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--split", default="validation")
    args = ap.parse_args()
    for label, name in SYSTEMS.items():
        try:
            a, b = correct(args.a, args.split, name), correct(args.b, args.split, name)
        except FileNotFoundError as err:
            print(f"{label}: not in both runs ({err.filename})")
            continue
        print(f"{label}: Acc {args.a.name} - {args.b.name} = {paired(a, b)}")
        for run in (args.a, args.b):
            print(f"  {run.name}: {divergence(run, args.split, name)}")


if __name__ == "__main__":
    main()
