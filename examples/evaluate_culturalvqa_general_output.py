"""Evaluate the authors' own CulturalVQA answers (``general_output``) against their filtered
reference chains (``keys_filtered``) with the offline all-MiniLM-L6-v2 similarity.

Data: ../shared/data/mmboundary/culturalvqa_mmb.json (He et al., MMBoundary, ACL 2025;
CC BY-NC 4.0). These answers carry no confidence statements, so ECE / MECE are unavailable:
this prints Acc and chain F1 only. Equivalent CLI:
``mmboundary evaluate --data culturalvqa_mmb.json --general-output --system general_output --out m.json``

Run: python examples/evaluate_culturalvqa_general_output.py [path] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmboundary" / "culturalvqa_mmb.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N records")
    args = parser.parse_args()

    import torch

    from mmboundary.data.loaders import load_annotated
    from mmboundary.evaluation.evaluate import evaluate_predictions, general_output_responses
    from mmboundary.models.similarity import default_similarity

    torch.set_num_threads(1)  # MiniLM on a shared CPU is faster on one thread
    start = time.perf_counter()
    samples = load_annotated(args.path, dataset="culturalvqa").samples[: args.limit]
    result = evaluate_predictions(samples, general_output_responses(samples), default_similarity(),
                                  system="general_output")
    c, m = result.counts, result.metrics
    print(f"CulturalVQA general_output vs keys_filtered ({c['evaluated']} samples, tau "
          f"{result.config.tau}, answer_tau {result.config.answer_tau}):")
    print(f"  Acc {m['accuracy']:.3f} over {c['with_gold']} samples with a gold answer "
          f"({c['evaluated'] - c['with_gold']} references state no 'So, the answer is X')")
    print(f"  chain F1 {m['f1']:.3f} (precision {m['precision']:.3f}, recall {m['recall']:.3f}); "
          f"{c['predicted_steps']} predicted steps, {c['aligned_steps']} aligned")
    print(f"  ECE: n/a ({result.unavailable['ece']}); MECE: n/a ({result.unavailable['mece']})")
    print(f"  {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
