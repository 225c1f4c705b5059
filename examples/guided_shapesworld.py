"""Confidence-guided decoding of the shipped ShapesWorld VLM, guided by its internal confidence.

The vanilla world VLM states no confidence, so its steps are judged by the one
``InternalConfidenceScorer`` (the full method's four estimators: LNLP, MTE, TokenSAR with the
offline MiniLM, CLIP-S with the shipped world CLIP) with a calibrator fitted on the model's own
greedy answers to ``--train`` train-split questions. On ``--questions`` validation questions it
runs: plain greedy decoding (checked to equal guided decoding with nothing below level 1),
resampling over a LEVEL x K grid, and abstention at each LEVEL, and prints accuracy, selective
accuracy, coverage, tokens generated, alternatives sampled, steps resampled and replaced per
question, and for resampling the answers turned right (+) and wrong (-) against plain. Answers are judged as the world VLM's
accuracy is (``training.world.final_answer`` + ``text.matching.judge_answer``).

    python examples/guided_shapesworld.py --questions 100 --seed 0 --out guided-shapes

``--out`` also writes ``summary.json``, ``risk_coverage.png`` and ``accuracy_tokens.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=100, help="validation questions")
    ap.add_argument("--train", type=int, default=200, help="train questions for the calibrator")
    ap.add_argument("--seed", type=int, default=0, help="world seed and torch seed of each run")
    ap.add_argument("--levels", type=_ints, default=[2, 3, 4], help="resample below LEVEL")
    ap.add_argument("--tries", type=_ints, default=[2, 4, 8], help="K alternatives per step")
    ap.add_argument("--abstain", type=_ints, default=[2, 3, 4], help="abstain below LEVEL")
    ap.add_argument("--estimators", default="lnlp,mte,tokensar,clips")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for summary.json and PNGs")
    return ap.parse_args()


def internal_source(vlm: Any, estimators: tuple[str, ...], train: list[Any],
                    max_new_tokens: int) -> tuple[Any, dict[int, int]]:
    """``InternalConfidence`` of ``vlm`` with a calibrator fitted on its answers to ``train``."""
    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.guidance import InternalConfidence
    from mmboundary.shapesworld.scenes import load_image, shipped_world_clip_path

    similarity = clip = None
    if "tokensar" in estimators:
        from mmboundary.models.similarity import default_similarity

        similarity = default_similarity()
    if "clips" in estimators:
        from mmboundary.models.clip import ClipScorer

        clip = ClipScorer.from_pretrained(shipped_world_clip_path(), device="cpu")
    scorer = InternalConfidenceScorer(
        vlm, ConfidenceCalibrator(estimators=estimators), similarity=similarity, clip=clip,
        parse_statements=False, image_loader=lambda s: (load_image(s), s.id), batch_size=32)
    calibrator = scorer.fit_calibrator(train, max_new_tokens=max_new_tokens)
    return InternalConfidence(scorer), dict(calibrator.levels_.counts_)


def run(vlm: Any, samples: list[Any], images: list[Any], source: Any, config: Any, seed: int,
        batch_size: int) -> tuple[list[Any], float]:
    """Guided responses of every sample (batches of ``batch_size``) and the seconds taken."""
    from mmboundary.guidance import guided_generate

    start, out = time.perf_counter(), []
    for i in range(0, len(samples), batch_size):
        out += guided_generate(vlm, samples[i:i + batch_size], images[i:i + batch_size], source,
                               config, seed=seed + i)
    return out, time.perf_counter() - start


def correctness(samples: list[Any], responses: list[Any]) -> list[float]:
    from mmboundary.shapesworld.pretrain_vlm import final_answer
    from mmboundary.text.matching import judge_answer

    return [judge_answer(s, final_answer(r.text), None).score
            for s, r in zip(samples, responses, strict=True)]


def _row(summary: Any, seconds: float, flips: str = "") -> str:
    def f(x: float | None, p: str = ".3f") -> str:
        return "n/a" if x is None else format(x, p)

    return (f"{summary.label:<14} {f(summary.accuracy):>6} {f(summary.selective_accuracy):>7} "
            f"{f(summary.coverage):>6} {f(summary.tokens, '.1f'):>7} {f(summary.tries_used, '.2f'):>6} "
            f"{f(summary.steps_resampled, '.2f'):>6} {f(summary.steps_replaced, '.2f'):>6} "
            f"{seconds:>6.1f} {flips:>7}")


def main() -> None:
    import torch

    from mmboundary.evaluation.selective import risk_coverage_curve, summarize_guided
    from mmboundary.guidance import GuideConfig
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, make_samples, shipped_world_model_path

    args = parse_args()
    torch.set_num_threads(args.threads)
    vlm = VLM.from_pretrained(shipped_world_model_path(), device="cpu", dtype="float32")
    t0 = time.perf_counter()
    source, counts = internal_source(vlm, tuple(args.estimators.split(",")),
                                     make_samples(args.train, args.seed, split="train"),
                                     args.max_new_tokens)
    print(f"calibrator: {args.estimators} fitted on {args.train} train answers in "
          f"{time.perf_counter() - t0:.0f}s; level counts {counts}")
    samples = make_samples(args.questions, args.seed, split="validation")
    images = [load_image(s) for s in samples]
    plain = vlm.generate(samples, images, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size)
    print(f"{len(samples)} validation questions (seed {args.seed}), max_new_tokens "
          f"{args.max_new_tokens}\n{'run':<14} {'acc':>6} {'sel.acc':>7} {'cover':>6} "
          f"{'tokens':>7} {'tries':>6} {'resmp':>6} {'repl':>6} {'sec':>6} {'+/-':>7}")
    rows: list[tuple[Any, float]] = []
    base: list[float] = []

    def record(label: str, config: Any) -> list[Any]:
        responses, seconds = run(vlm, samples, images, source, config, args.seed, args.batch_size)
        correct = correctness(samples, responses)
        summary = summarize_guided(responses, correct, label=label)
        rows.append((summary, seconds))
        flips = ""
        if base and config.guide == "resample":  # answers turned right / wrong vs plain
            flips = (f"+{sum(b < c for b, c in zip(base, correct, strict=True))}/"
                     f"-{sum(b > c for b, c in zip(base, correct, strict=True))}")
        base[:] = base or correct
        print(_row(summary, seconds, flips), flush=True)
        return responses

    levelled = record("plain", GuideConfig(below=1, max_new_tokens=args.max_new_tokens))
    same = sum(g.text == p.text and g.meta["tokens_generated"] == len(p.token_stats.token_ids)
               for g, p in zip(levelled, plain, strict=True))
    print(f"  (guided with nothing below level 1 = plain greedy, same text and tokens: "
          f"{same}/{len(plain)})")
    for k in args.tries:
        for level in args.levels:
            record(f"resample L{level} K{k}", GuideConfig(
                below=level, tries=k, max_new_tokens=args.max_new_tokens))
    for level in args.abstain:
        record(f"abstain L{level}", GuideConfig(guide="abstain", below=level,
                                                max_new_tokens=args.max_new_tokens))
    lowest = [min(r.meta["step_levels"], default=0) for r in levelled]
    curve = risk_coverage_curve(lowest, correctness(samples, levelled))
    print("risk-coverage of the plain chains' lowest step level: "
          + ", ".join(f"L>={t:.0f}: cover {c:.2f} risk {r:.3f}"
                      for t, c, r in zip(curve.thresholds, curve.coverage, curve.risk,
                                         strict=True))
          + f"; AURC {curve.area():.3f}")
    if args.out is not None:
        write_outputs(args, rows, counts, curve)


def write_outputs(args: argparse.Namespace, rows: list[tuple[Any, float]],
                  counts: dict[int, int], curve: Any) -> None:
    """``summary.json`` (every run's ``GuidedSummary`` + seconds) and the two plots."""
    from mmboundary.evaluation.selective import accuracy_tokens_png, risk_coverage_png

    args.out.mkdir(parents=True, exist_ok=True)
    summaries = [s for s, _ in rows]
    (args.out / "summary.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "level_counts": counts,
         "runs": [{**s.to_dict(), "seconds": sec} for s, sec in rows]}, indent=1))
    (args.out / "risk_coverage.png").write_bytes(risk_coverage_png(
        [s for s in summaries if s.guide == "abstain"], curve, "lowest step level"))
    (args.out / "accuracy_tokens.png").write_bytes(accuracy_tokens_png(
        [s for s in summaries if s.guide == "resample" and s.below != 1], summaries[0]))
    print(f"wrote {args.out}/summary.json, risk_coverage.png, accuracy_tokens.png")


if __name__ == "__main__":
    main()
