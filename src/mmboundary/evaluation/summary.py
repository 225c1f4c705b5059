"""Dataset metrics from per-sample results, each with a bootstrap interval over questions.

One function, :func:`summarize`, turns the per-sample results of :mod:`evaluate` into the numbers
every table shows (see ``METRICS`` for the names and what they are computed over).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmboundary.evaluation import metrics as M
from mmboundary.evaluation.intervals import bootstrap_interval

#: metric name -> (granularity, description). Lower is better for ece/mece/brier/aurc.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("answer", "mean answer score (VQA soft accuracy is graded)"),
    "precision": ("chain", "correct predicted steps / predicted steps, mean over samples"),
    "recall": ("chain", "reference steps covered / reference steps, mean over samples"),
    "f1": ("chain", "chain F1, mean over samples"),
    "ece": ("answer", "ECE (equal-width bins) of the answer step's confidence"),
    "brier": ("answer", "Brier score of the answer step's confidence"),
    "auroc": ("answer", "AUROC of the answer step's confidence vs answer correctness"),
    "aurc": ("answer", "area under the risk-coverage curve (answers)"),
    "coverage": ("answer", "share of judged answers whose answer step carries a confidence"),
    "mece": ("step", "MECE: ECE over aligned steps with a confidence"),
    "step_brier": ("step", "Brier score over aligned steps with a confidence"),
    "step_auroc": ("step", "AUROC of step confidence vs step correctness"),
    "step_aurc": ("step", "area under the risk-coverage curve (aligned steps)"),
    "step_coverage": ("step", "share of aligned steps that carry a confidence"),
    "step_accuracy": ("step", "share of aligned steps judged correct"),
}
STEP_KINDS = ("perception", "reasoning")


@dataclass
class Summary:
    metrics: dict[str, float | None]
    unavailable: dict[str, str]
    counts: dict[str, int]
    reliability: dict[str, dict[str, list] | None]
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    breakdown: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass
class _Columns:
    """Per-sample data the metrics are computed from (so a bootstrap resamples samples)."""

    score: list[float | None]
    answer: list[tuple[float, float] | None]  # (confidence, correct) of the answer step
    answer_judged: list[bool]
    f1: list[tuple[float, float, float] | None]
    steps: list[list[tuple[float | None, float, str | None]]]  # aligned: (conf, correct, kind)


def _columns(results: Sequence[Any]) -> _Columns:
    cols = _Columns([], [], [], [], [])
    for r in results:
        cols.score.append(r.answer_score)
        judged = r.answer_correct is not None
        cols.answer_judged.append(judged)
        cols.answer.append((r.response_confidence, float(r.answer_correct))
                           if judged and r.response_confidence is not None else None)
        cols.f1.append(None if r.f1 is None else (r.precision, r.recall, r.f1))
        cols.steps.append([(s.expressed_confidence, float(s.correct), s.kind)
                           for s in r.steps if s.correct is not None and s.ref_index is not None])
    return cols


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _pairs(cols: _Columns, ix: Sequence[int], level: str, kind: str | None = None
           ) -> tuple[list[float], list[float]]:
    if level == "answer":
        pairs = [cols.answer[i] for i in ix if cols.answer[i] is not None]
    else:
        pairs = [(c, y) for i in ix for c, y, k in cols.steps[i]
                 if c is not None and (kind is None or k == kind)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _metric_fns(n_bins: int, kind: str | None = None) -> dict[str, Callable]:
    """name -> f(cols, indices) -> value or None."""

    def cal(level: str, fn: Callable) -> Callable:
        def run(cols: _Columns, ix: Sequence[int]) -> float | None:
            conf, y = _pairs(cols, ix, level, kind)
            return fn(conf, y) if conf else None
        return run

    def ece(c: list, y: list) -> float:
        return M.expected_calibration_error(c, y, n_bins=n_bins)

    def mece(c: list, y: list) -> float:
        return M.multi_granularity_ece([c], [y], n_bins=n_bins)

    def answer_coverage(cols: _Columns, ix: Sequence[int]) -> float | None:
        judged = [i for i in ix if cols.answer_judged[i]]
        return _mean([float(cols.answer[i] is not None) for i in judged])

    def step_values(select: Callable) -> Callable:
        def run(cols: _Columns, ix: Sequence[int]) -> float | None:
            return _mean([select(c, y) for i in ix for c, y, k in cols.steps[i]
                          if kind is None or k == kind])
        return run

    fns: dict[str, Callable] = {
        "mece": cal("step", mece), "step_brier": cal("step", M.brier_score),
        "step_auroc": cal("step", M.auroc), "step_aurc": cal("step", M.area_under_risk_coverage),
        "step_coverage": step_values(lambda c, y: float(c is not None)),
        "step_accuracy": step_values(lambda c, y: y),
    }
    if kind is not None:
        return fns
    return {
        "accuracy": lambda cols, ix: _mean([cols.score[i] for i in ix if cols.score[i] is not None]),
        "precision": lambda cols, ix: _mean([cols.f1[i][0] for i in ix if cols.f1[i]]),
        "recall": lambda cols, ix: _mean([cols.f1[i][1] for i in ix if cols.f1[i]]),
        "f1": lambda cols, ix: _mean([cols.f1[i][2] for i in ix if cols.f1[i]]),
        "ece": cal("answer", ece), "brier": cal("answer", M.brier_score),
        "auroc": cal("answer", M.auroc), "aurc": cal("answer", M.area_under_risk_coverage),
        "coverage": answer_coverage, **fns,
    }


def _why(name: str, cols: _Columns, everything: list[int]) -> str:
    level = METRICS[name][0]
    if name == "accuracy":
        return "no evaluated sample has a gold answer"
    if level == "chain":
        return "no sample has a reference chain"
    if name in ("coverage",):
        return "no evaluated sample has a gold answer"
    if name in ("step_coverage", "step_accuracy"):
        return "no predicted step was aligned to a reference step"
    conf, y = _pairs(cols, everything, level)
    what = "response's answer step" if level == "answer" else "aligned step"
    if not conf:
        return f"no {what} carries an expressed confidence"
    return f"every {what} with a confidence is {'correct' if y[0] else 'wrong'}"


def summarize(results: Sequence[Any], *, n_bins: int = 10, bootstrap: int = 1000,
              seed: int = 0) -> Summary:
    """Every metric of ``METRICS`` (plus the per-step-type breakdown), each with its interval."""
    cols = _columns(results)
    everything = list(range(len(results)))
    metrics: dict[str, float | None] = {}
    intervals: dict[str, list[float] | None] = {}
    unavailable: dict[str, str] = {}
    for name, fn in _metric_fns(n_bins).items():
        metrics[name] = fn(cols, everything)
        if metrics[name] is None:
            unavailable[name] = _why(name, cols, everything)
            intervals[name] = None
            continue
        ci = bootstrap_interval(len(results), lambda ix, fn=fn: fn(cols, ix), n_boot=bootstrap,
                                seed=seed) if bootstrap else None
        intervals[name] = None if ci is None else [round(ci[0], 6), round(ci[1], 6)]
    breakdown = {kind: {name: fn(cols, everything) for name, fn in _metric_fns(n_bins, kind).items()}
                 for kind in STEP_KINDS}
    for kind in STEP_KINDS:
        breakdown[kind]["aligned_steps"] = sum(k == kind for s in cols.steps for *_, k in s)
    answer_c, answer_y = _pairs(cols, everything, "answer")
    step_c, step_y = _pairs(cols, everything, "step")
    reliability = {
        "response": M.reliability_diagram_data(answer_c, answer_y, n_bins).to_dict()
        if answer_c else None,
        "step": M.reliability_diagram_data(step_c, step_y, n_bins).to_dict() if step_c else None,
    }
    counts = {"evaluated": len(results), "with_reference": sum(f is not None for f in cols.f1),
              "with_gold": sum(cols.answer_judged),
              "with_answer": sum(r.answer is not None for r in results),
              "with_response_confidence": len(answer_c),
              "predicted_steps": sum(len(r.steps) for r in results),
              "aligned_steps": sum(len(s) for s in cols.steps),
              "aligned_steps_with_confidence": len(step_c), "n_bins": n_bins,
              "bootstrap": bootstrap}
    return Summary(metrics, unavailable, counts, reliability, intervals, breakdown)
