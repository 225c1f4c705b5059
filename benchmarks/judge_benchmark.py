"""Step-judge benchmark on the MMBoundary authors' real A-OKVQA chains (see judge_data/).

Prints, for each judge, the recall of "wrong" (with its precision against the paraphrases) per
kind of false step, and the share of hand-written paraphrases kept correct; writes the numbers as
JSON. The assertions judge was designed on the dev half: the table reports the TEST half.

    python benchmarks/judge_benchmark.py                       # similarity, exact, assertions
    python benchmarks/judge_benchmark.py --nli-model PATH      # + an NLI cross-encoder folder
    python benchmarks/judge_benchmark.py --llm-base-url URL --llm-model NAME   # + an LLM judge

The same as ``mmboundary judge bench``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = HERE / "judge_data" / "cases.jsonl"
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mmboundary" / "aokvqa_val_mmb.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=["test", "dev", "all"], default="test")
    parser.add_argument("--judges", default="similarity,exact,assertions")
    parser.add_argument("--nli-model", default=None)
    parser.add_argument("--llm-base-url", default=None)
    parser.add_argument("--llm-model", default=None)
    parser.add_argument("--out", type=Path, default=HERE / "judge_results.json")
    args = parser.parse_args()

    from mmboundary.judging.bench import run_benchmark

    run_benchmark(cases=args.cases, data=args.data, split=args.split,
                  judges=args.judges.split(","), nli_model=args.nli_model,
                  llm_base_url=args.llm_base_url, llm_model=args.llm_model, out=args.out,
                  echo=print)


if __name__ == "__main__":
    main()
