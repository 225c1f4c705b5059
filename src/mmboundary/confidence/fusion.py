"""Fuse the normalised estimator confidences into one step confidence C, and cut C into levels.

METHOD.md section 3. Fusion (paper): the weighted mean C = sum_i w_i c_i, default w_i = 1/4
**(ours: equal weights)**; ablation "w U_Max": max pooling C = max_i c_i; ablation "w/o U_X": drop
estimator X by configuration (the remaining weights are renormalised to sum to 1).

Levels (paper: 5 levels from the distribution's mean and spread) **(ours: the cuts)**. The four
cut points are given in units of the spread, k in ``offsets`` = (-1.5, -0.5, 0.5, 1.5), read by one
of two rules:

- ``rule="quantile"`` (default): cut at the empirical quantiles q_k = Phi(k) of the fitted C, where
  Phi is the standard normal CDF: 6.68 / 30.85 / 69.15 / 93.32 %. On a normal C these are exactly
  the sigma rule's cuts; on the skewed, clipped C real models give (the ShapesWorld demo: mu .735,
  sigma .200, clipped at 1) every level still holds its share of the steps.
- ``rule="sigma"``: cut at mu + k * sigma. On that demo C the top cut is 1.035 and level 5 never
  occurs; kept for comparison and to read calibrators written before the quantile rule.
- ``rule="accuracy"`` **(ours)**: levels that mean what their value says. Fitted on C *and* the
  step correctness of the same steps (judged against the training references by the rule set):
  an isotonic regression p(C) of correctness on C (scikit-learn), and a step gets the level whose
  value (2k - 1)/10 is nearest to p(C), i.e. the cuts are where p crosses 0.2 / 0.4 / 0.6 / 0.8
  (the midpoint between the last fitted C below and the first at or above). A level no fitted step
  is that often right for has no cut inside the data (+inf: it is never said), which is the point:
  on the ShapesWorld demo, the quantile rule says level 3-4 (0.5-0.7) for steps right 39% of the
  time. ``offsets`` are unused by this rule (its n_levels stays ``len(offsets) + 1``).

level(C) = 1 + #{cuts <= C}. ``fit`` records the level counts of the fitted set (``counts_``) and,
by default, warns when a level is empty (``empty_level="raise"`` makes it an error).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

FUSIONS = ("mean", "max", "fitted")
LEVEL_RULES = ("quantile", "sigma", "accuracy")
#: The L2 penalty of the fitted fusion's logistic regression (on the weights, not the intercept).
FITTED_FUSION_L2 = 1e-3
ANSWER_STEP_RULES = ("own", "chain_min", "chain_mean")
#: Cut points in units of the spread: mu + k sigma (sigma rule) or the quantile Phi(k).
DEFAULT_CUT_OFFSETS = (-1.5, -0.5, 0.5, 1.5)


class EmptyLevelWarning(UserWarning):
    """A confidence level holds no step of the set the level cuts were fitted on."""


def labels_array(correct: Sequence[float | bool | None]) -> np.ndarray:
    """Step correctness as floats, NaN for an unjudged step (None)."""
    return np.array([np.nan if c is None else float(c) for c in correct], dtype=np.float64)


def fuse_mean(confidences: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """C = sum_i w_i c_i / sum_i w_i over the estimators present (weights default equal)."""
    if not confidences:
        raise ValueError("fusion needs at least one estimator confidence, got none")
    w = {k: (1.0 if weights is None else float(weights[k])) for k in confidences}
    total = sum(w.values())
    if total <= 0:
        raise ValueError(f"fusion weights must sum to > 0, got {w}")
    return float(sum(w[k] * float(c) for k, c in confidences.items()) / total)


def fuse_max(confidences: Mapping[str, float]) -> float:
    """C = max_i c_i (the paper's "w U_Max" ablation)."""
    if not confidences:
        raise ValueError("fusion needs at least one estimator confidence, got none")
    return float(max(confidences.values()))


def nonnegative_logistic_weights(x: np.ndarray, y: np.ndarray,
                                 l2: float = FITTED_FUSION_L2) -> np.ndarray:
    """The weights w >= 0 of the logistic regression P(y = 1) = sigmoid(b + x @ w), fitted by
    L-BFGS-B (scipy) on the mean log-loss + ``l2`` * |w|^2 (the intercept b is free and not
    penalised); ``x``: (steps, estimators), ``y``: 1/0. Returns w.

    >>> x = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.7, .3], [.3, .7]])
    >>> w = nonnegative_logistic_weights(x, np.array([1, 1, 0, 0, 1, 0.]))
    >>> bool(w[0] > 1.0), float(w[1])   # the second column says the opposite: weight 0
    (True, 0.0)
    """
    from scipy.optimize import minimize

    design = np.column_stack([x, np.ones(len(x))])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        score = design @ theta
        p = 1.0 / (1.0 + np.exp(-score))
        penalty = np.append(theta[:-1], 0.0)
        value = float(np.mean(np.logaddexp(0.0, score) - y * score) + l2 * penalty @ penalty)
        return value, design.T @ (p - y) / len(y) + 2.0 * l2 * penalty

    start = np.append(np.ones(x.shape[1]), 0.0)
    bounds = [(0.0, None)] * x.shape[1] + [(None, None)]
    fit = minimize(loss, start, jac=True, bounds=bounds, method="L-BFGS-B")
    if not fit.success:
        raise ValueError(f"fitted fusion: the logistic regression did not converge ({fit.message})")
    return np.maximum(fit.x[:-1], 0.0)


@dataclass
class Fusion:
    """Configured fusion: ``method`` "mean", "max" or "fitted"; per-estimator ``weights``.

    - "mean" (paper): C = sum_i w_i c_i / sum_i w_i, ``weights`` given (default equal);
    - "max": C = max_i c_i (the "w U_Max" ablation);
    - "fitted" **(ours)**: the paper's weighted mean with weights fitted on labelled reference
      steps (``fit``): a logistic regression of step correctness on the normalised confidences
      with the weights held >= 0 (``nonnegative_logistic_weights``), rescaled to sum to 1. C stays
      a weighted mean in [0, 1]; an estimator that does not tell right steps from wrong ones gets
      weight 0 (ShapesWorld: U_CLIPS, step AUROC .34 on the vanilla model's train steps).
      ``weights`` holds the fitted weights; calling it before ``fit`` is an error.

    A step missing an estimator (e.g. CLIPS for a sample without an image) is fused over the
    estimators it has, weights renormalised **(ours)**.
    """

    method: str = "mean"
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise ValueError(f"Fusion.method must be one of {FUSIONS}, got {self.method!r}")
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"Fusion.weights must be >= 0, got {bad}")

    @property
    def needs_labels(self) -> bool:
        """Whether fitting needs each reference step's correctness."""
        return self.method == "fitted"

    def fit(self, normalized: Mapping[str, np.ndarray], correct: np.ndarray) -> Fusion:
        """Fit the "fitted" fusion's weights (the others have nothing to fit: returns ``self``).
        ``normalized``: {estimator: normalised confidence of each reference step, NaN where the
        step lacks it}; ``correct``: each step's correctness (1/0, NaN = unjudged). Fitted on
        the judged steps that have every estimator."""
        if self.method != "fitted":
            return self
        names = list(normalized)
        x = np.column_stack([np.asarray(normalized[n], dtype=np.float64) for n in names])
        y = np.asarray(correct, dtype=np.float64)
        use = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
        if use.sum() < 10 or len(np.unique(y[use])) < 2:
            raise ValueError(f"fitted fusion: needs >= 10 judged steps with every estimator "
                             f"({names}) and both right and wrong ones; got {int(use.sum())} "
                             f"steps, {int(y[use].sum()) if use.any() else 0} right")
        w = nonnegative_logistic_weights(x[use], y[use])
        if not w.sum() > 0:
            raise ValueError(f"fitted fusion: every estimator got weight 0 on {int(use.sum())} "
                             f"steps (none of {names} tells right steps from wrong ones)")
        self.weights = {n: float(v / w.sum()) for n, v in zip(names, w, strict=True)}
        return self

    def _step_weights(self, names: Iterable[str]) -> dict[str, float]:
        """The weight of each of a step's estimators ``names`` in the mean ("mean": given, else
        1; "fitted": fitted, else 0)."""
        if self.method == "fitted" and not self.weights:
            raise RuntimeError("Fusion('fitted') is not fitted: its weights come from fit() or "
                               "a saved calibrator")
        weights = {k: self.weights.get(k, 1.0 if self.method == "mean" else 0.0) for k in names}
        if self.method == "fitted" and not sum(weights.values()) > 0:
            raise ValueError(f"fitted fusion: a step with only {sorted(weights)} has no "
                             f"estimator of weight > 0 ({self.weights})")
        return weights

    def shares(self, names: Iterable[str]) -> dict[str, float] | None:
        """Each estimator's share of C for a step that has every one of ``names`` (its weight
        over the weights' sum); None for max pooling, which has no weights."""
        if self.method == "max":
            return None
        weights = self._step_weights(names)
        total = sum(weights.values())
        return {k: w / total for k, w in weights.items()}

    def __call__(self, confidences: Mapping[str, float]) -> float:
        if self.method == "max":
            return fuse_max(confidences)
        return fuse_mean(confidences, self._step_weights(confidences))

    def to_dict(self) -> dict:
        return {"method": self.method, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fusion:
        return cls(method=data["method"], weights=dict(data.get("weights", {})))


# ---------------------------------------------------------------------------------------------
# The math of the level cuts: pure functions.
# ---------------------------------------------------------------------------------------------
def answer_positions(chains: Sequence[int], n_steps: int) -> list[int]:
    """Index of each response's answer step (its last step) in the flat list of ``n_steps``
    steps, the responses' step counts being ``chains`` (in order; an empty response has none).

    >>> answer_positions([3, 0, 2], 5)
    [2, 4]
    """
    if any(int(n) != n or n < 0 for n in chains) or sum(chains) != n_steps:
        raise ValueError(f"chains: the step counts per response ({len(chains)} responses, "
                         f"{sum(chains)} steps) must be non-negative integers summing to the "
                         f"{n_steps} steps")
    ends = np.cumsum(np.asarray(chains, dtype=np.int64))
    return [int(end) - 1 for end, n in zip(ends, chains, strict=True) if n > 0]


def chain_confidence(fused: Sequence[float | None], rule: str) -> float | None:
    """The answer step's C from its whole chain **(ours)**: ``chain_min`` = the least confident
    step's C (an answer is no surer than the weakest step it rests on), ``chain_mean`` = the mean
    C; steps with no C are skipped (None if none has one).

    >>> chain_confidence([0.9, None, 0.4, 0.8], "chain_min"), chain_confidence([0.2, 0.6], "chain_mean")
    (0.4, 0.4)
    """
    values = [float(c) for c in fused if c is not None]
    if not values:
        return None
    if rule == "chain_min":
        return min(values)
    if rule == "chain_mean":
        return float(np.mean(values))
    raise ValueError(f"answer step rule must be one of {ANSWER_STEP_RULES[1:]}, got {rule!r}")


def normal_cdf(k: float) -> float:
    """Phi(k) = (1 + erf(k / sqrt 2)) / 2, the standard normal CDF.

    >>> [round(100 * normal_cdf(k), 2) for k in DEFAULT_CUT_OFFSETS]
    [6.68, 30.85, 69.15, 93.32]
    """
    return 0.5 * (1.0 + math.erf(k / math.sqrt(2.0)))


def sigma_cuts(fused: np.ndarray, offsets: Sequence[float]) -> list[float]:
    """Cuts mu + k sigma for k in ``offsets`` (sigma: population std, ddof = 0)."""
    mu, sigma = float(fused.mean()), float(fused.std())
    return [mu + k * sigma for k in offsets]


def quantile_cuts(fused: np.ndarray, offsets: Sequence[float]) -> list[float]:
    """Cuts at the empirical quantiles Phi(k) of ``fused`` for k in ``offsets`` (linear
    interpolation between order statistics, numpy's default)."""
    return [float(q) for q in np.quantile(fused, [normal_cdf(k) for k in offsets])]


def accuracy_cuts(fused: np.ndarray, correct: np.ndarray, n_levels: int) -> list[float]:
    """Cuts where the isotonic fit p(C) of ``correct`` on ``fused`` crosses k / n_levels (the
    midpoints between the level values (2k - 1) / (2 n_levels)); +inf where it never does.

    >>> accuracy_cuts(np.array([.1, .2, .3, .4, .5, .6]), np.array([0, 0, 0, 1, 1, 1.]), 5)
    [0.35, 0.35, 0.35, 0.35]
    """
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(fused, correct)
    xs = np.unique(fused)
    ps = iso.predict(xs)
    cuts = []
    for k in range(1, n_levels):
        above = np.nonzero(ps >= k / n_levels)[0]
        if above.size == 0:
            cuts.append(math.inf)
        elif above[0] == 0:
            cuts.append(-math.inf)
        else:
            cuts.append(float((xs[above[0] - 1] + xs[above[0]]) / 2))
    return cuts


def assign_levels(cuts: Sequence[float], fused: np.ndarray | float) -> np.ndarray:
    """level = 1 + #{cuts <= C} (C equal to a cut goes to the upper level)."""
    return 1 + np.searchsorted(np.asarray(cuts, dtype=np.float64), fused, side="right")


def level_counts(levels: np.ndarray, n_levels: int) -> dict[int, int]:
    """{level: how many} for every level 1..n_levels (zeros included)."""
    found = np.bincount(np.asarray(levels, dtype=np.int64), minlength=n_levels + 1)
    return {k: int(found[k]) for k in range(1, n_levels + 1)}


def _check_fused(fused: Sequence[float] | np.ndarray, min_count: int) -> np.ndarray:
    x = np.array(fused, dtype=np.float64).ravel()  # a copy: the caller's array is never touched
    if x.size < min_count:
        raise ValueError(f"LevelCuts.fit: needs >= {min_count} fused step confidences "
                         f"(min_count), got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("LevelCuts.fit: fused confidences contain NaN/inf")
    if np.all(x == x[0]):
        raise ValueError(f"LevelCuts.fit: all {x.size} fused confidences equal {x[0]:.6g}; "
                         "levels need a spread")
    return x


# ---------------------------------------------------------------------------------------------
# The fitted object.
# ---------------------------------------------------------------------------------------------
@dataclass
class LevelCuts:
    """Five confidence levels from four cut points fitted on a set of fused confidences C.

    Parameters (see the module docstring for the rules):
        rule: "quantile" (default: cut at the empirical quantiles Phi(k)), "sigma"
            (cut at mu + k sigma) or "accuracy" (cut where the isotonic step accuracy crosses
            the midpoints between level values; ``fit`` needs ``correct``).
        offsets: the k of each cut, increasing (default -1.5, -0.5, 0.5, 1.5).
        min_count: fitting needs at least this many confidences, not all equal.
        empty_level: "warn" (default, an ``EmptyLevelWarning``) or "raise" (``ValueError``)
            when a level holds no fitted confidence **(ours)**.

    Fitted attributes (set by ``fit`` or ``from_dict`` only): ``cuts_`` (the cut points),
    ``mean_`` and ``std_`` of the fitted C, ``counts_`` ({level: steps} on the fitted set;
    ``None`` for a calibrator saved before counts were recorded), ``accuracy_`` ({level: step
    accuracy of the labelled fitted steps at that level}, None where none; only when ``fit`` was
    given ``correct``).
    """

    rule: Literal["quantile", "sigma", "accuracy"] = "quantile"
    offsets: tuple[float, ...] = DEFAULT_CUT_OFFSETS
    min_count: int = 10
    empty_level: Literal["warn", "raise"] = "warn"

    def _check_params(self) -> None:
        if self.rule not in LEVEL_RULES:
            raise ValueError(f"LevelCuts.rule must be one of {LEVEL_RULES}, got {self.rule!r}")
        if not self.offsets or list(self.offsets) != sorted(set(self.offsets)):
            raise ValueError(f"LevelCuts.offsets must be strictly increasing, got {self.offsets}")
        if self.empty_level not in ("warn", "raise"):
            raise ValueError(f"LevelCuts.empty_level must be 'warn' or 'raise', got "
                             f"{self.empty_level!r}")

    @property
    def n_levels(self) -> int:
        return len(self.offsets) + 1

    def fit(self, fused: Sequence[float] | np.ndarray,
            correct: Sequence[float | bool | None] | None = None) -> LevelCuts:
        """Fit the cuts on ``fused`` (not modified); returns ``self``. ``correct`` (same length;
        1/0 or None for an unjudged step) is needed by the accuracy rule and, when given, also
        records each level's accuracy on the fitted set (``accuracy_``)."""
        self._check_params()
        x = _check_fused(fused, self.min_count)
        y = None
        if correct is not None:
            if len(correct) != x.size:
                raise ValueError(f"LevelCuts.fit: {len(correct)} correctness labels for {x.size} "
                                 "fused confidences")
            y = labels_array(correct)
        if self.rule == "accuracy":
            if y is None or int(np.sum(np.isfinite(y))) < self.min_count:
                raise ValueError("LevelCuts.fit (accuracy rule): needs the step correctness of "
                                 f">= {self.min_count} fitted steps ('correct'), got "
                                 f"{0 if y is None else int(np.sum(np.isfinite(y)))}")
            known = np.isfinite(y)
            cuts = accuracy_cuts(x[known], y[known], self.n_levels)
        else:
            cuts = (quantile_cuts if self.rule == "quantile" else sigma_cuts)(x, self.offsets)
        levels = assign_levels(cuts, x)
        counts = level_counts(levels, self.n_levels)
        empty = [k for k, n in counts.items() if n == 0]
        if empty and self.rule != "accuracy":  # the accuracy rule leaves unearned levels empty
            message = (f"LevelCuts.fit ({self.rule} rule): level(s) {empty} hold none of the "
                       f"{x.size} fitted confidences; counts {counts}, cuts "
                       f"{[round(c, 4) for c in cuts]}")
            if self.empty_level == "raise":
                raise ValueError(message)
            warnings.warn(message, EmptyLevelWarning, stacklevel=2)
        self.cuts_, self.counts_ = cuts, counts
        self.mean_, self.std_ = float(x.mean()), float(x.std())
        self.accuracy_ = None
        if y is not None:
            self.accuracy_ = {}
            for k in range(1, self.n_levels + 1):
                at = (levels == k) & np.isfinite(y)
                self.accuracy_[k] = float(y[at].mean()) if at.any() else None
        return self

    def _fitted_cuts(self) -> list[float]:
        if not hasattr(self, "cuts_"):
            raise RuntimeError("LevelCuts is not fitted: call fit() or load a fitted calibrator")
        return self.cuts_

    def level(self, confidence: float) -> int:
        """The level of one fused confidence C."""
        return int(assign_levels(self._fitted_cuts(), confidence))

    def transform(self, fused: Sequence[float] | np.ndarray) -> np.ndarray:
        """The levels of many fused confidences."""
        return assign_levels(self._fitted_cuts(), np.asarray(fused, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": self.rule, "offsets": list(self.offsets),
                                "min_count": self.min_count, "empty_level": self.empty_level}
        if hasattr(self, "cuts_"):
            data.update(mean=self.mean_, std=self.std_, cuts=list(self.cuts_),
                        counts=None if self.counts_ is None
                        else {str(k): v for k, v in self.counts_.items()},
                        accuracy=None if self.accuracy_ is None
                        else {str(k): v for k, v in self.accuracy_.items()})
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelCuts:
        """Rebuild from ``to_dict`` output. A dict without ``rule`` was written before the
        quantile rule existed: it is read as the sigma rule, its cuts kept as saved."""
        cuts = cls(rule=data.get("rule", "sigma"), offsets=tuple(data["offsets"]),
                   min_count=data.get("min_count", 10),
                   empty_level=data.get("empty_level", "warn"))
        cuts._check_params()
        if data.get("cuts") is not None:
            if len(data["cuts"]) != len(cuts.offsets):
                raise ValueError(f"LevelCuts: {len(data['cuts'])} saved cuts for "
                                 f"{len(cuts.offsets)} offsets")
            cuts.cuts_ = [float(c) for c in data["cuts"]]
            cuts.mean_, cuts.std_ = data.get("mean"), data.get("std")
            counts = data.get("counts")
            cuts.counts_ = None if counts is None else {int(k): int(v) for k, v in counts.items()}
            accuracy = data.get("accuracy")
            cuts.accuracy_ = None if accuracy is None else {int(k): v for k, v in
                                                            accuracy.items()}
        return cuts
