"""Stated level vs internal level of a finished `mmboundary demo` run (issue #12's diagnostics).

For the warm-up and the RL model: each test step's stated level (its statement) against the level
of the warm-up model's own internal confidence for that step (the R_CS calibrator of the run,
fitted on the warm-up model's own answers), the confusion matrix, Cohen's kappa and level shares
(``evaluation.diagnostics.stated_vs_internal``; `mmboundary demo` runs it as its diagnostics
stage and shows it in the report).

    python examples/level_diagnostics.py runs/demo/seed-0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
from mmboundary.data.io import read_responses
from mmboundary.evaluation.diagnostics import stated_vs_internal
from mmboundary.models.clip import ClipScorer
from mmboundary.models.similarity import default_similarity
from mmboundary.models.vlm import VLM
from mmboundary.shapesworld import read_split, shipped_world_clip_path

SYSTEMS = {"warm-up": "mmboundary-w-o-rl--warm-up-only",
           "warm-up + RL": "mmboundary--ours--warm-up---rl"}


def main(run: Path) -> None:
    split = json.loads((run / "demo_config.json").read_text()).get("eval_split", "test")
    samples = read_split(json.loads((run / "world/done.json").read_text())[split])
    predictions = run / ("predictions" if split == "test" else f"predictions-{split}")
    rl = json.loads((run / "rl/done.json").read_text())
    sft = json.loads((run / "sft-mmboundary/done.json").read_text())
    scorer = InternalConfidenceScorer(
        VLM.from_pretrained(sft["model"], device="cpu", dtype="float32"),
        ConfidenceCalibrator.load(rl["calibrator"]), similarity=default_similarity(),
        clip=ClipScorer.from_pretrained(shipped_world_clip_path(), device="cpu"))
    for name, folder in SYSTEMS.items():
        files = sorted((predictions / folder).glob("*.jsonl"))
        result = stated_vs_internal(scorer, samples, read_responses(files[0]))
        print(f"{name}: {result.n} steps; kappa {result.kappa}; exact {result.exact:.3f}; "
              f"within one {result.within_one:.3f}")
        print("  stated share  ", {k: round(v, 3) for k, v in result.stated_share.items()})
        print("  internal share", {k: round(v, 3) for k, v in result.internal_share.items()})
        print("  confusion (rows stated 1-5, cols internal 1-5):", result.confusion)

if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/seed-0"))
