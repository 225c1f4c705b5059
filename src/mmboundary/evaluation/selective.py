"""Selective prediction and compute: what confidence-guided decoding buys (issue #17).

Abstention (``guidance``, ``guide="abstain"``) trades coverage for accuracy; resampling trades
tokens for accuracy. Pure functions over per-question correctness (``correct[i]`` in [0, 1]:
1/0, or graded such as VQA soft accuracy) and the guided responses' ``meta``:

- coverage = answered / N (an abstention is not answered);
- selective accuracy = sum of correct over answered / answered; selective risk = 1 - it;
- accuracy = sum of correct over answered / N (an abstention earns 0, as a wrong answer would:
  the number to put beside the plain model's accuracy);
- the risk-coverage curve of a confidence score (answer the most confident first; tied scores
  are answered together, the convention of ``metrics.area_under_risk_coverage``, whose AURC is
  the curve's area);
- tokens per question (``meta["tokens_generated"]``: discarded alternatives included).

``risk_coverage_png`` and ``accuracy_tokens_png`` draw them (PNG bytes a report can embed) for
one system and one run; ``risk_coverage_series_png`` and ``accuracy_tokens_series_png`` for
several systems, their points (``PlotPoint``) averaged over runs (``mean_points``, sd bars).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmboundary.data.schema import Response


def _arrays(correct: Sequence[float], answered: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    acc = np.asarray(correct, dtype=np.float64).ravel()
    ans = np.asarray(answered, dtype=bool).ravel()
    if acc.shape != ans.shape:
        raise ValueError(f"selective: {acc.size} correctness values but {ans.size} answered flags")
    if acc.size and (not np.all(np.isfinite(acc)) or acc.min() < 0 or acc.max() > 1):
        raise ValueError("selective: correctness values must be finite and in [0, 1]")
    return acc, ans


def coverage(answered: Sequence[bool]) -> float | None:
    """answered / N; None for no question.

    >>> coverage([True, False, True, True])
    0.75
    """
    ans = np.asarray(answered, dtype=bool).ravel()
    return float(ans.mean()) if ans.size else None


def selective_accuracy(correct: Sequence[float], answered: Sequence[bool]) -> float | None:
    """sum_{i answered} correct_i / #answered; None when nothing is answered.

    >>> selective_accuracy([1, 0, 1, 0], [True, True, True, False])
    0.6666666666666666
    """
    acc, ans = _arrays(correct, answered)
    return float(acc[ans].mean()) if ans.any() else None


def answered_accuracy(correct: Sequence[float], answered: Sequence[bool]) -> float | None:
    """sum_{i answered} correct_i / N: an abstention earns 0; None for no question.

    >>> answered_accuracy([1, 0, 1, 1], [True, True, True, False])
    0.5
    """
    acc, ans = _arrays(correct, answered)
    return float((acc * ans).mean()) if acc.size else None


@dataclass(frozen=True)
class RiskCoverage:
    """Points of a risk-coverage curve, one per group of tied scores, most confident first:
    answering every question with score >= ``thresholds[j]`` covers ``coverage[j]`` and errs
    at ``risk[j]``."""

    thresholds: list[float]
    coverage: list[float]
    risk: list[float]

    def area(self) -> float:
        """AURC = (1/N) sum_k risk(k), every k of a tie group at the group's risk (equals
        ``metrics.area_under_risk_coverage`` on the same scores)."""
        cov = np.asarray([0.0, *self.coverage])
        return float(np.sum(np.diff(cov) * np.asarray(self.risk)))


def risk_coverage_curve(confidences: Sequence[float], correct: Sequence[float]) -> RiskCoverage:
    """Selective risk against coverage when the questions with the highest score are answered.

    For each distinct score t (descending): coverage(t) = #{conf >= t} / N and
    risk(t) = 1 - mean correct over {conf >= t}.

    >>> c = risk_coverage_curve([3, 5, 5, 1], [0, 1, 0, 1])
    >>> c.thresholds, c.coverage, [round(r, 3) for r in c.risk]
    ([5.0, 3.0, 1.0], [0.5, 0.75, 1.0], [0.5, 0.667, 0.5])
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    acc, _ = _arrays(correct, [True] * conf.size)
    if not np.all(np.isfinite(conf)):
        raise ValueError("risk_coverage_curve: confidences must be finite")
    order = np.argsort(-conf, kind="stable")
    conf, acc = conf[order], acc[order]
    n = conf.size
    ends = [k for k in range(n) if k == n - 1 or conf[k + 1] != conf[k]]
    cum = np.cumsum(1.0 - acc)
    return RiskCoverage(thresholds=[float(conf[k]) for k in ends],
                        coverage=[(k + 1) / n for k in ends],
                        risk=[float(cum[k] / (k + 1)) for k in ends])


@dataclass(frozen=True)
class GuidedSummary:
    """One guided run: ``n`` questions scored (``failed`` error lines left out), ``answered``,
    ``coverage``, ``accuracy`` (abstention = 0), ``selective_accuracy``, and per question the
    mean ``tokens`` generated, alternatives sampled (``tries_used``), ``steps_resampled`` and
    ``steps_replaced`` (resampled steps where an alternative won)."""

    label: str
    guide: str | None
    below: int | None
    tries: int | None
    n: int
    failed: int
    answered: int
    coverage: float | None
    accuracy: float | None
    selective_accuracy: float | None
    tokens: float | None
    tries_used: float | None
    steps_resampled: float | None
    steps_replaced: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize_guided(responses: Sequence[Response], correct: Sequence[float],
                     label: str = "") -> GuidedSummary:
    """The ``GuidedSummary`` of guided responses and their answers' correctness.

    A response with ``meta["error"]`` is left out (counted ``failed``); ``meta["abstained"]``
    marks an abstention. Tokens: ``meta["tokens_generated"]``, else (a plain response) its
    ``token_stats`` length. Raises when ``correct`` and ``responses`` differ in length or a
    response lacks both token counts.
    """
    if len(correct) != len(responses):
        raise ValueError(f"summarize_guided: {len(responses)} responses but {len(correct)} "
                         "correctness values")
    ok = [(r, c) for r, c in zip(responses, correct, strict=True) if "error" not in r.meta]
    answered = [not r.meta.get("abstained", False) for r, _ in ok]
    acc = [c for _, c in ok]
    tokens = []
    for r, _ in ok:
        if "tokens_generated" in r.meta:
            tokens.append(float(r.meta["tokens_generated"]))
        elif r.token_stats is not None:
            tokens.append(float(len(r.token_stats.token_ids)))
        else:
            raise ValueError(f"summarize_guided: response {r.sample_id}: no meta "
                             "'tokens_generated' and no token_stats to count tokens from")
    meta = ok[0][0].meta if ok else {}
    return GuidedSummary(
        label=label, guide=meta.get("guide"), below=meta.get("guide_below"),
        tries=meta.get("guide_tries"), n=len(ok), failed=len(responses) - len(ok),
        answered=sum(answered), coverage=coverage(answered),
        accuracy=answered_accuracy(acc, answered),
        selective_accuracy=selective_accuracy(acc, answered), tokens=_mean(tokens),
        tries_used=_mean([float(r.meta.get("tries_used", 0)) for r, _ in ok]),
        steps_resampled=_mean([float(r.meta.get("steps_resampled", 0)) for r, _ in ok]),
        steps_replaced=_mean([float(r.meta.get("steps_replaced", 0)) for r, _ in ok]))


# ------------------------------------------------------------------------------------ plots
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def risk_coverage_png(abstentions: Sequence[GuidedSummary], curve: RiskCoverage | None = None,
                      curve_label: str = "confidence ranking", title: str = "") -> bytes:
    """Selective risk (1 - selective accuracy) against coverage: one point per abstention run,
    labelled L<below>, and optionally a confidence score's ``curve`` (its operating points)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8), dpi=100)
    if curve is not None:
        ax.plot(curve.coverage, curve.risk, ".--", color="gray", label=curve_label)
    points = [s for s in abstentions if s.coverage is not None and s.selective_accuracy is not None]
    ax.plot([s.coverage for s in points], [1 - s.selective_accuracy for s in points], "o",
            color="C3", label="abstain below level L")
    for s in points:
        ax.annotate(f"L{s.below}", (s.coverage, 1 - s.selective_accuracy),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlim=(0, 1.02), ylim=(0, None), xlabel="coverage (share answered)",
           ylabel="selective risk", title=title or "risk vs coverage")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def accuracy_tokens_png(runs: Sequence[GuidedSummary], baseline: GuidedSummary | None = None,
                        title: str = "") -> bytes:
    """Accuracy against mean tokens generated per question: one line per K (``tries``) through
    its ``below`` levels (labelled L<below>), and the plain model (``baseline``) as a star."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8), dpi=100)
    for k in sorted({s.tries for s in runs if s.tries is not None}):
        pts = sorted((s for s in runs if s.tries == k and s.tokens is not None
                      and s.accuracy is not None), key=lambda s: s.tokens or 0.0)
        ax.plot([s.tokens for s in pts], [s.accuracy for s in pts], "o-", label=f"K={k}")
        for s in pts:
            ax.annotate(f"L{s.below}", (s.tokens, s.accuracy),
                        textcoords="offset points", xytext=(4, -10), fontsize=7)
    if baseline is not None and baseline.tokens is not None and baseline.accuracy is not None:
        ax.plot([baseline.tokens], [baseline.accuracy], "*", color="black", markersize=12,
                label=baseline.label or "plain")
    ax.set(xlabel="tokens generated per question", ylabel="accuracy",
           title=title or "accuracy vs compute (resampling)")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


# ------------------------------------------------------- several systems, several runs (seeds)
@dataclass(frozen=True)
class PlotPoint:
    """One labelled operating point (e.g. "plain", "L3 K2", "L>=2") of one system: ``x``, ``y``
    and their sample sd over runs (seeds; 0 for one run), from ``n`` runs."""

    label: str
    x: float
    y: float
    x_sd: float = 0.0
    y_sd: float = 0.0
    n: int = 1


def mean_points(runs: Sequence[Sequence[PlotPoint]]) -> list[PlotPoint]:
    """The points of several runs of one system merged by ``label`` (first-seen order): mean and
    sample sd (ddof=1, ``intervals.mean_sd``) of x and y over the runs that have the label.

    >>> [(p.label, p.x, p.y, p.n) for p in mean_points([[PlotPoint("a", 1, .5)],
    ...                                                  [PlotPoint("a", 3, .7)]])]
    [('a', 2.0, 0.6, 2)]
    """
    from mmboundary.evaluation.intervals import mean_sd

    by_label: dict[str, list[PlotPoint]] = {}
    for run in runs:
        for point in run:
            by_label.setdefault(point.label, []).append(point)
    out = []
    for label, points in by_label.items():
        x, y = mean_sd([p.x for p in points]), mean_sd([p.y for p in points])
        assert x is not None and y is not None  # every point has both
        out.append(PlotPoint(label, x[0], y[0], x[1], y[1], len(points)))
    return out


def _series_png(series: dict[str, Sequence[PlotPoint]], xlabel: str, ylabel: str, title: str,
                xlim: tuple[float, float] | None = None) -> bytes:
    """One colour per series: its points joined in order, +-sd error bars, each labelled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for i, (name, points) in enumerate(series.items()):
        ax.errorbar([p.x for p in points], [p.y for p in points],
                    xerr=[p.x_sd for p in points], yerr=[p.y_sd for p in points], fmt="o-",
                    color=f"C{i}", capsize=3, label=name)
        for j, p in enumerate(points):  # labels alternate above / below: near points stay legible
            ax.annotate(p.label, (p.x, p.y), textcoords="offset points",
                        xytext=(4, 4 if j % 2 == 0 else -11), fontsize=7, color=f"C{i}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def accuracy_tokens_series_png(series: dict[str, Sequence[PlotPoint]], title: str = "") -> bytes:
    """Accuracy (y) against mean tokens generated per question (x, discarded alternatives
    included) for several systems, each a line through its points (e.g. plain -> guided); error
    bars = sd over runs. ``accuracy_tokens_png`` is the one-system, one-run grid view."""
    return _series_png(series, "tokens generated per question", "accuracy",
                       title or "accuracy vs compute")


def risk_coverage_series_png(series: dict[str, Sequence[PlotPoint]], title: str = "") -> bytes:
    """Selective risk (y) against coverage (x) for several systems (x = coverage, y = risk of
    each ``PlotPoint``); error bars = sd over runs. ``risk_coverage_png`` is the one-run view
    with explicit abstention runs."""
    return _series_png(series, "coverage (share answered)", "selective risk",
                       title or "risk vs coverage", xlim=(0, 1.05))
