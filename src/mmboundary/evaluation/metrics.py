"""Calibration metrics (paper Table 1: ECE, MECE; plus Brier score, AUROC, reliability diagrams).

Pure numpy: arrays of confidences in [0, 1] and 0/1 correctness in, numbers out. One binning
definition (:func:`reliability_diagram_data`) serves ECE, MECE and the reliability plots.

Input rules shared by every function here:

- ``confidences`` and ``correct`` must have the same length; a confidence outside [0, 1] or a NaN
  raises ``ValueError`` naming its index; ``correct`` must hold 0/1 (or booleans).
- Empty input raises ``ValueError`` (a metric over nothing is undefined, never 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Binning = Literal["uniform", "quantile"]


def _validate(confidences: Sequence[float] | np.ndarray,
              correct: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    acc = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != acc.shape:
        raise ValueError(f"confidences has {conf.size} values but correct has {acc.size}")
    if conf.size == 0:
        raise ValueError("empty input: a calibration metric needs at least one (confidence, correct) pair")
    bad = np.flatnonzero(np.isnan(conf))
    if bad.size:
        raise ValueError(f"confidences[{bad[0]}] is NaN; expected a number in [0, 1]")
    bad = np.flatnonzero((conf < 0.0) | (conf > 1.0))
    if bad.size:
        raise ValueError(f"confidences[{bad[0]}] = {float(conf[bad[0]])!r}; expected a number in [0, 1]")
    bad = np.flatnonzero((acc != 0.0) & (acc != 1.0))
    if bad.size:
        raise ValueError(f"correct[{bad[0]}] = {float(acc[bad[0]])!r}; expected 0 or 1")
    return conf, acc


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (only non-empty bins are listed).

    ``lower[b] <= confidence < upper[b]`` (a bin with ``lower == upper == 1.0`` holds the
    confidences equal to 1). ``count``, mean ``confidence`` and ``accuracy`` per bin.
    """

    lower: list[float]
    upper: list[float]
    count: list[int]
    confidence: list[float]
    accuracy: list[float]

    def to_dict(self) -> dict[str, list]:
        return asdict(self)


def _bin_edges(conf: np.ndarray, n_bins: int, binning: Binning) -> np.ndarray:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if binning == "uniform":
        # Exact k / n_bins, so a decimal such as 0.3 falls in [0.3, 0.4) (torch.linspace's float
        # rounding can place it one bin lower; otherwise the convention is torchmetrics').
        return np.arange(n_bins + 1, dtype=np.float64) / n_bins
    if binning == "quantile":
        return np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1))
    raise ValueError(f"binning must be 'uniform' or 'quantile', got {binning!r}")


def reliability_diagram_data(confidences: Sequence[float] | np.ndarray,
                             correct: Sequence[float] | np.ndarray,
                             n_bins: int = 10, binning: Binning = "uniform") -> ReliabilityBins:
    """Bin the pairs by confidence and report each non-empty bin's size, mean confidence, accuracy.

    Binning (torchmetrics' convention): with edges ``e_0 = 0 < e_1 < ... < e_n = 1``, bin b holds
    ``e_b <= c < e_{b+1}``; a confidence exactly 1.0 is the top bin ``[1, 1]`` of its own.
    ``"uniform"``: ``e_k = k / n_bins``. ``"quantile"``: ``e_k`` = the k/n_bins quantile of the
    confidences (equal-mass bins, the last one closed ``[e_{n-1}, e_n]``; tied confidences
    stay in one bin).

    >>> bins = reliability_diagram_data([0.15, 0.25, 0.95, 1.0], [0, 1, 1, 1], n_bins=2)
    >>> bins.count, bins.confidence, bins.accuracy
    ([2, 1, 1], [0.2, 0.95, 1.0], [0.5, 1.0, 1.0])
    """
    conf, acc = _validate(confidences, correct)
    edges = _bin_edges(conf, n_bins, binning)
    index = np.searchsorted(edges[1:-1], conf, side="right")
    if binning == "uniform":
        index = np.where(conf >= 1.0, n_bins, index)
    out: dict[str, list] = {"lower": [], "upper": [], "count": [], "confidence": [], "accuracy": []}
    for b in np.unique(index):
        members = index == b
        out["lower"].append(float(edges[b]))
        out["upper"].append(float(edges[min(b + 1, len(edges) - 1)]))
        out["count"].append(int(members.sum()))
        out["confidence"].append(round(float(conf[members].mean()), 12))
        out["accuracy"].append(round(float(acc[members].mean()), 12))
    return ReliabilityBins(**out)


def expected_calibration_error(confidences: Sequence[float] | np.ndarray,
                               correct: Sequence[float] | np.ndarray,
                               n_bins: int = 10, binning: Binning = "uniform") -> float:
    """Expected calibration error (L1), the paper's ECE.

    ``ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|`` over the bins of
    :func:`reliability_diagram_data` (10 equal-width bins by default, as in the paper); equal to
    ``torchmetrics.classification.BinaryCalibrationError(n_bins, norm="l1")``.

    Worked example, 2 bins: confidences 0.15, 0.25 (correct 0, 1) share bin [0, 0.5): mean
    confidence 0.2, accuracy 0.5, gap 0.3, weight 2/4; 0.95 (correct) is alone in [0.5, 1): gap
    0.05, weight 1/4; 1.0 (correct) is the [1, 1] bin: gap 0. ECE = 0.15 + 0.0125 = 0.1625.

    >>> round(expected_calibration_error([0.15, 0.25, 0.95, 1.0], [0, 1, 1, 1], n_bins=2), 6)
    0.1625
    """
    bins = reliability_diagram_data(confidences, correct, n_bins=n_bins, binning=binning)
    total = sum(bins.count)
    return float(sum(n / total * abs(a - c)
                     for n, a, c in zip(bins.count, bins.accuracy, bins.confidence, strict=True)))


def multi_granularity_ece(aligned_step_confidences: Sequence[Sequence[float]],
                          aligned_step_correct: Sequence[Sequence[float]],
                          n_bins: int = 10, binning: Binning = "uniform") -> float:
    """MECE, the paper's step-level ECE: binned ECE over every aligned step of the dataset.

    Inputs are per sample: ``aligned_step_confidences[i]`` = expressed confidences of sample i's
    predicted steps that were aligned one-to-one to reference steps
    (:class:`mmboundary.judging.rules.StepRules`; unaligned steps are dropped), and
    ``aligned_step_correct[i]`` their correctness (the step judge). The steps of all samples
    are pooled: ``MECE = ECE(concat_i conf_i, concat_i correct_i)``. **(ours: the exact rule;
    METHOD.md section 7)**

    Worked example: sample 1 steps (0.9, correct), (0.1, wrong); sample 2 step (0.9, wrong).
    Pooled, 10 bins: bin [0.1, 0.2) gap |0 - 0.1| weight 1/3; bin [0.9, 1) mean conf 0.9,
    accuracy 0.5, gap 0.4, weight 2/3. MECE = 0.1/3 + 0.8/3 = 0.3.

    >>> round(multi_granularity_ece([[0.9, 0.1], [0.9]], [[1, 0], [0]]), 6)
    0.3
    """
    if len(aligned_step_confidences) != len(aligned_step_correct):
        raise ValueError(f"{len(aligned_step_confidences)} samples of confidences but "
                         f"{len(aligned_step_correct)} of correctness")
    conf: list[float] = []
    acc: list[float] = []
    for i, (c, a) in enumerate(zip(aligned_step_confidences, aligned_step_correct, strict=True)):
        if len(c) != len(a):
            raise ValueError(f"sample {i}: {len(c)} step confidences but {len(a)} correctness values")
        conf.extend(c)
        acc.extend(a)
    return expected_calibration_error(conf, acc, n_bins=n_bins, binning=binning)


def brier_score(confidences: Sequence[float] | np.ndarray,
                correct: Sequence[float] | np.ndarray) -> float:
    """Brier score ``(1/N) * sum_i (c_i - y_i)^2`` (lower is better; 0 = perfect).

    >>> brier_score([0.9, 0.2], [1, 1])  # (0.01 + 0.64) / 2
    0.325
    """
    conf, acc = _validate(confidences, correct)
    return round(float(np.mean((conf - acc) ** 2)), 15)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (as scipy.stats.rankdata)."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return ((upper - counts + 1 + upper) / 2.0)[inverse]


def auroc(confidences: Sequence[float] | np.ndarray,
          correct: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve of confidence as a predictor of correctness.

    Mann-Whitney form: ``AUROC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)`` with ``R_+`` the sum of
    the (tie-averaged) ranks of the correct samples' confidences; equals
    ``sklearn.metrics.roc_auc_score(correct, confidences)``. 1 = every correct answer is more
    confident than every wrong one, 0.5 = no discrimination.

    Returns ``None`` when only one class is present (all correct or all wrong): AUROC is then
    undefined, and a number would be made up.

    >>> auroc([0.9, 0.8, 0.3, 0.8], [1, 0, 0, 1])  # pairs (+,-): 0.9>0.8, 0.9>0.3, 0.8=0.8, 0.8>0.3
    0.875
    >>> auroc([0.9, 0.8], [1, 1]) is None
    True
    """
    conf, acc = _validate(confidences, correct)
    n_pos = int(acc.sum())
    n_neg = acc.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(conf)
    return float((ranks[acc == 1.0].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def area_under_risk_coverage(confidences: Sequence[float] | np.ndarray,
                             correct: Sequence[float] | np.ndarray) -> float:
    """AURC: the mean selective risk over coverages, answering the most confident first.

    Sort by confidence (descending); at coverage k/N the selective risk is the error rate of the
    k most confident. Tied confidences are accepted together: every k inside a tie group gets the
    group's risk at its end (the order within a tie is not the predictor's to choose).
    ``AURC = (1/N) sum_k risk(k)``; lower is better; a constant predictor scores the error rate;
    a perfect ranking is the floor, which depends on the error rate (Geifman et al., 2019).

    >>> area_under_risk_coverage([0.9, 0.8, 0.3], [1, 1, 0])  # risks 0, 0, 1/3
    0.111111111111111
    >>> area_under_risk_coverage([0.5, 0.5], [1, 0])  # one tie group: risk 1/2 at both k
    0.5
    """
    conf, acc = _validate(confidences, correct)
    order = np.argsort(-conf, kind="stable")
    conf, err = conf[order], 1.0 - acc[order]
    cum_err = np.cumsum(err)
    # the end of each tie group: last index with the same confidence
    ends = np.searchsorted(-conf, -conf, side="right") - 1
    risks = cum_err[ends] / (ends + 1)
    return round(float(risks.mean()), 15)


@dataclass(frozen=True)
class ChainScores:
    """Step-level precision, recall and F1 of one predicted chain against its reference."""

    precision: float
    recall: float
    f1: float
    n_pred: int
    n_ref: int
    n_correct: int


def chain_scores(n_correct: int, n_pred: int, n_ref: int) -> ChainScores:
    """The paper's chain F1 for one sample from its one-to-one alignment.

    precision = correct predicted steps / predicted steps; recall = reference steps covered by a
    correct aligned step / reference steps (one-to-one, so both numerators are the number M of
    correct aligned pairs): ``P = M / n_pred``, ``R = M / n_ref``, ``F1 = 2PR / (P + R)`` (0 when
    P + R = 0). An empty prediction scores 0. An empty reference raises (recall is undefined).

    >>> round(chain_scores(2, 3, 4).f1, 6)  # P = 2/3, R = 1/2
    0.571429
    """
    if n_ref == 0:
        raise ValueError("the reference chain is empty: step recall and F1 are undefined")
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_ref
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return ChainScores(precision, recall, f1, n_pred, n_ref, n_correct)
