"""Per-estimator normalisers and the fitted calibrator (normalise -> fuse -> level).

METHOD.md section 3 **(ours)**: each estimator's raw score is mapped, per model, to a confidence
c in [0, 1] by a normaliser fitted on a reference set of steps; uncertainties are flipped
(c = 1 - scaled u). Default: robust min-max between the 1st and 99th percentiles, clipped;
alternative: the empirical CDF (quantile).

scikit-learn style: constructors take parameters only; ``fit`` validates its input, never modifies
it or any object passed in, sets the fitted attributes (ending in ``_``, absent before ``fit``)
and returns ``self``; the math lives in private pure functions; ``to_dict``/``from_dict`` (and the
calibrator's ``save``/``load``) round-trip a fitted object through JSON.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmboundary.confidence.estimators import ESTIMATORS, is_uncertainty
from mmboundary.confidence.fusion import (
    ANSWER_STEP_RULES,
    Fusion,
    LevelCuts,
    answer_positions,
    chain_confidence,
    labels_array,
)
from mmboundary.data.io import write_json_atomic


# ---------------------------------------------------------------------------------------------
# The math: pure functions.
# ---------------------------------------------------------------------------------------------
def _fit_values(x: Sequence[float] | np.ndarray, name: str, min_count: int) -> np.ndarray:
    arr = np.array(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"normaliser {name!r}: reference scores contain NaN/inf")
    if arr.size < min_count:
        raise ValueError(f"normaliser {name!r}: fitting needs >= {min_count} reference scores, "
                         f"got {arr.size}")
    if np.all(arr == arr[0]):
        raise ValueError(f"normaliser {name!r}: all {arr.size} reference scores equal "
                         f"{arr[0]:.6g}; a constant estimator cannot be scaled")
    return arr


def _robust_bounds(arr: np.ndarray, lower_pct: float, upper_pct: float) -> tuple[float, float]:
    """(q_lo, q_hi): the percentiles; the full range when the mass sits in one value."""
    low, high = np.percentile(arr, [lower_pct, upper_pct])
    if high <= low:
        low, high = arr.min(), arr.max()
    return float(low), float(high)


def _minmax_confidence(x: np.ndarray, low: float, high: float, flip: bool) -> np.ndarray:
    """c = clip((x - low) / (high - low), 0, 1), or 1 - c for an uncertainty."""
    scaled = np.clip((x - low) / (high - low), 0.0, 1.0)
    return 1.0 - scaled if flip else scaled


def _reference_quantiles(arr: np.ndarray, n_quantiles: int) -> list[float]:
    n = max(2, min(n_quantiles, arr.size))
    return np.quantile(arr, np.linspace(0.0, 1.0, n)).tolist()


def _empirical_cdf(x: np.ndarray, quantiles: Sequence[float], flip: bool) -> np.ndarray:
    """F(x) by linear interpolation of the reference quantiles, ties averaged (scikit-learn's
    ``QuantileTransformer``); 1 - F(x) for an uncertainty."""
    q = np.asarray(quantiles, dtype=np.float64)
    refs = np.linspace(0.0, 1.0, q.size)
    cdf = 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], -refs[::-1]))
    cdf = np.clip(cdf, 0.0, 1.0)
    return 1.0 - cdf if flip else cdf


# ---------------------------------------------------------------------------------------------
# Normalisers.
# ---------------------------------------------------------------------------------------------
@dataclass
class RobustMinMaxNormalizer:
    """c = clip((x - q_lo) / (q_hi - q_lo), 0, 1), flipped to 1 - c when ``uncertainty``.

    q_lo, q_hi = the ``lower_pct``/``upper_pct`` percentiles of the reference scores (default 1
    and 99: a few outliers do not squash everyone else); when they coincide, the full range.
    Constant reference scores are an error. Fitted attributes: ``low_``, ``high_``.
    """

    lower_pct: float = 1.0
    upper_pct: float = 99.0
    uncertainty: bool = True
    name: str = ""
    min_count: int = 2

    def fit(self, x: Sequence[float] | np.ndarray) -> RobustMinMaxNormalizer:
        if not 0 <= self.lower_pct < self.upper_pct <= 100:
            raise ValueError(f"normaliser {self.name!r}: lower_pct, upper_pct must satisfy "
                             f"0 <= lower < upper <= 100, got {self.lower_pct}, {self.upper_pct}")
        arr = _fit_values(x, self.name, self.min_count)
        self.low_, self.high_ = _robust_bounds(arr, self.lower_pct, self.upper_pct)
        return self

    def transform(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        if not hasattr(self, "low_"):
            raise RuntimeError(f"normaliser {self.name!r} is not fitted")
        return _minmax_confidence(np.asarray(x, dtype=np.float64), self.low_, self.high_,
                                  self.uncertainty)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "robust_minmax", "name": self.name, "uncertainty": self.uncertainty,
                "lower_pct": self.lower_pct, "upper_pct": self.upper_pct,
                "low": getattr(self, "low_", None), "high": getattr(self, "high_", None)}


@dataclass
class QuantileNormalizer:
    """c = F(x), the empirical CDF of the reference scores (1 - F(x) when ``uncertainty``).

    F is stored as ``n_quantiles`` reference quantiles and interpolated linearly; ties are
    averaged as in scikit-learn's ``QuantileTransformer``. Constant reference scores are an error.
    Fitted attribute: ``quantiles_``.
    """

    n_quantiles: int = 1000
    uncertainty: bool = True
    name: str = ""
    min_count: int = 2

    def fit(self, x: Sequence[float] | np.ndarray) -> QuantileNormalizer:
        if self.n_quantiles < 2:
            raise ValueError(f"normaliser {self.name!r}: n_quantiles must be >= 2, got "
                             f"{self.n_quantiles}")
        self.quantiles_ = _reference_quantiles(_fit_values(x, self.name, self.min_count),
                                               self.n_quantiles)
        return self

    def transform(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        if not hasattr(self, "quantiles_"):
            raise RuntimeError(f"normaliser {self.name!r} is not fitted")
        return _empirical_cdf(np.asarray(x, dtype=np.float64), self.quantiles_, self.uncertainty)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "quantile", "name": self.name, "uncertainty": self.uncertainty,
                "n_quantiles": self.n_quantiles, "quantiles": getattr(self, "quantiles_", None)}


Normalizer = RobustMinMaxNormalizer | QuantileNormalizer
NORMALIZERS = ("robust_minmax", "quantile")


def normalizer_from_dict(data: Mapping[str, Any]) -> Normalizer:
    """Rebuild a normaliser (fitted when the dict holds fitted values) from ``to_dict`` output."""
    kind = data.get("kind")
    norm: Normalizer
    if kind == "robust_minmax":
        norm = RobustMinMaxNormalizer(lower_pct=data["lower_pct"], upper_pct=data["upper_pct"],
                                      uncertainty=data["uncertainty"], name=data["name"])
        if data.get("low") is not None and data.get("high") is not None:
            norm.low_, norm.high_ = float(data["low"]), float(data["high"])
        return norm
    if kind == "quantile":
        norm = QuantileNormalizer(n_quantiles=data["n_quantiles"], uncertainty=data["uncertainty"],
                                  name=data["name"])
        if data.get("quantiles") is not None:
            norm.quantiles_ = [float(q) for q in data["quantiles"]]
        return norm
    raise ValueError(f"normaliser kind must be one of {NORMALIZERS}, got {kind!r}")


def make_normalizer(kind: str, name: str, *, lower_pct: float = 1.0,
                    upper_pct: float = 99.0) -> Normalizer:
    """A fresh normaliser for estimator ``name`` (direction taken from the estimator)."""
    if kind == "robust_minmax":
        return RobustMinMaxNormalizer(lower_pct, upper_pct, is_uncertainty(name), name)
    if kind == "quantile":
        return QuantileNormalizer(uncertainty=is_uncertainty(name), name=name)
    raise ValueError(f"normaliser kind must be one of {NORMALIZERS}, got {kind!r}")


# ---------------------------------------------------------------------------------------------
# The calibrator: normalise -> fuse -> level.
# ---------------------------------------------------------------------------------------------
@dataclass
class StepConfidence:
    """What the calibrator gives one step: normalised scores, fused confidence, level."""

    normalized: dict[str, float]
    confidence: float | None
    level: int | None


@dataclass
class ConfidenceCalibrator:
    """Per-estimator normalisers + fusion + level cut points, fitted on a reference set of steps.

    Parameters: ``estimators`` (names), ``normalizer`` ("robust_minmax" or "quantile") with its
    ``lower_pct``/``upper_pct``, ``fusion`` (a ``Fusion``) and ``levels`` (an unfitted
    ``LevelCuts`` giving the level rule; it is copied, never fitted in place).

    ``fit(raw)`` takes one ``{estimator: raw score}`` dict per step (a step may lack an estimator;
    estimators not in ``estimators`` are ignored), fits each normaliser on the scores it has, fuses
    the normalised confidences and fits a copy of ``levels`` on the fused values. Fitted
    attributes: ``normalizers_`` ({estimator: normaliser}), ``levels_`` (the fitted ``LevelCuts``;
    its ``counts_`` are the level counts of the reference set), ``discrimination_`` (when ``fit``
    was given the steps' correctness: each estimator's and the fused C's step AUROC on the
    reference set, ``step_discrimination``; else None). ``transform(raw)`` gives each step's
    ``StepConfidence``.

    The answer step (a response's last step, "So, the answer is X") **(ours)**: its own tokens
    only copy what the chain already decided, so its own C says how sure the copy is, not the
    answer (ShapesWorld training steps: AUROC .44 for the answer's correctness, while the chain's
    least confident step gives .64). ``answer_step``:

    - ``"own"``: the answer step is a step like any other (one set of cuts for all steps);
    - ``"chain_min"`` / ``"chain_mean"``: its C is the least / mean C of its response's steps
      (``fusion.chain_confidence``), and its level comes from cuts of its own (``answer_levels_``,
      the rule of ``levels``, fitted on the answer steps alone); the other steps' cuts
      (``levels_``) are fitted on the other steps. ``fit`` and ``transform`` then need
      ``chains``: the step count of each response, in order (``transform`` without ``chains``
      treats every step as a plain step, e.g. a lone step scored during guided decoding).
    """

    estimators: tuple[str, ...] = ESTIMATORS
    normalizer: str = "robust_minmax"
    lower_pct: float = 1.0
    upper_pct: float = 99.0
    fusion: Fusion = field(default_factory=Fusion)
    levels: LevelCuts = field(default_factory=LevelCuts)
    answer_step: str = "own"

    def clone(self) -> ConfidenceCalibrator:
        """A new, unfitted calibrator with (copies of) the same parameters."""
        return type(self)(**{f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)})

    def _check_params(self) -> None:
        if not self.estimators:
            raise ValueError("ConfidenceCalibrator.estimators: needs at least one estimator")
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown:
            raise ValueError(f"ConfidenceCalibrator.estimators: unknown {unknown}; expected a "
                             f"subset of {list(ESTIMATORS)}")
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"ConfidenceCalibrator.normalizer: expected one of {NORMALIZERS}, "
                             f"got {self.normalizer!r}")
        if self.answer_step not in ANSWER_STEP_RULES:
            raise ValueError(f"ConfidenceCalibrator.answer_step: expected one of "
                             f"{ANSWER_STEP_RULES}, got {self.answer_step!r}")

    def _answer_mask(self, items: list[StepConfidence],
                     chains: Sequence[int] | None) -> np.ndarray | None:
        """Set each answer step's C from its chain (in place); the answer-step mask, or None
        when every step is a plain step (``answer_step="own"`` or no ``chains``)."""
        if self.answer_step == "own" or chains is None:
            return None
        mask = np.zeros(len(items), dtype=bool)
        ends = answer_positions(chains, len(items))
        for end, n in zip(ends, [n for n in chains if n > 0], strict=True):
            items[end].confidence = chain_confidence(
                [item.confidence for item in items[end + 1 - n:end + 1]], self.answer_step)
            mask[end] = True
        return mask

    def fit(self, raw: Sequence[Mapping[str, float]],
            correct: Sequence[float | bool | None] | None = None,
            chains: Sequence[int] | None = None) -> ConfidenceCalibrator:
        """Fit on the raw scores of a reference set of steps (not modified); returns ``self``.
        ``correct[i]``: step i's correctness (1/0, None = unjudged), needed by the level rule
        ``accuracy`` (``LevelCuts``) and recorded per level by the others. ``chains``: the step
        count of each response (needed unless ``answer_step="own"``, see the class docstring)."""
        self._check_params()
        if self.answer_step != "own" and chains is None:
            raise ValueError(f"ConfidenceCalibrator.fit (answer_step={self.answer_step!r}): needs "
                             "chains, the step count of each response")
        if correct is not None and len(correct) != len(raw):
            raise ValueError(f"ConfidenceCalibrator.fit: {len(correct)} correctness labels for "
                             f"{len(raw)} steps")
        bad = [i for i, r in enumerate(raw) if not isinstance(r, Mapping)]
        if bad:
            raise ValueError(f"ConfidenceCalibrator.fit: step {bad[0]} of the reference set is "
                             f"{type(raw[bad[0]]).__name__}, expected a {{estimator: score}} dict")
        normalizers: dict[str, Normalizer] = {}
        for name in self.estimators:
            values = [r[name] for r in raw if name in r]
            if not values:
                raise ValueError(f"calibrator: no step in the reference set of {len(raw)} steps "
                                 f"has a raw {name!r} score (switch it off with estimators=...)")
            norm = make_normalizer(self.normalizer, name, lower_pct=self.lower_pct,
                                   upper_pct=self.upper_pct)
            normalizers[name] = norm.fit(values)
        columns = _normalized_columns(raw, self.estimators, normalizers)
        y = None if correct is None else labels_array(correct)
        if self.fusion.needs_labels:
            if y is None:
                raise ValueError(f"ConfidenceCalibrator.fit: the fusion {self.fusion.method!r} "
                                 "needs the reference steps' correctness ('correct')")
            try:
                self.fusion = replace(self.fusion).fit(columns, y)
            except ValueError as err:
                raise ValueError(f"ConfidenceCalibrator.fit: {err}") from err
        items = _fuse(columns, self.estimators, self.fusion)
        answer = self._answer_mask(items, chains)
        keep = [i for i, c in enumerate(items) if c.confidence is not None]

        def cuts_on(idx: list[int], what: str) -> LevelCuts:  # a fresh copy: `levels` stays unfitted
            labels = None if correct is None else [correct[i] for i in idx]
            try:
                return replace(self.levels).fit([items[i].confidence for i in idx], labels)
            except ValueError as err:
                raise ValueError(f"{what}: {err}") from err

        self.discrimination_ = (None if y is None else step_discrimination(
            columns, [c.confidence for c in items], y))
        if answer is None:
            self.levels_ = cuts_on(keep, "level cuts")
        else:
            self.levels_ = cuts_on([i for i in keep if not answer[i]], "level cuts (non-answer steps)")
            self.answer_levels_ = cuts_on([i for i in keep if answer[i]], "level cuts (answer steps)")
        self.normalizers_ = normalizers
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or loading a fitted file) has set the fitted attributes."""
        return (hasattr(self, "normalizers_") and hasattr(self, "levels_")
                and (self.answer_step == "own" or hasattr(self, "answer_levels_"))
                and not (self.fusion.needs_labels and not self.fusion.weights))

    @property
    def needs_labels(self) -> bool:
        """Whether ``fit`` needs the reference steps' correctness (the level rule ``accuracy``
        or the ``fitted`` fusion)."""
        return self.levels.rule == "accuracy" or self.fusion.needs_labels

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("ConfidenceCalibrator is not fitted: call fit() or load()")

    def transform(self, raw: Sequence[Mapping[str, float]],
                  chains: Sequence[int] | None = None) -> list[StepConfidence]:
        """Normalised scores, fused C and level of each step (``None`` for a step with no
        score of any of the estimators); ``chains`` as in ``fit`` (the answer steps)."""
        self._check_fitted()
        out = _fuse(_normalized_columns(raw, self.estimators, self.normalizers_), self.estimators,
                    self.fusion)
        answer = self._answer_mask(out, chains)
        for i, item in enumerate(out):
            if item.confidence is not None:
                cuts = self.answer_levels_ if answer is not None and answer[i] else self.levels_
                item.level = cuts.level(item.confidence)
        return out

    def fit_transform(self, raw: Sequence[Mapping[str, float]],
                      correct: Sequence[float | bool | None] | None = None,
                      chains: Sequence[int] | None = None) -> list[StepConfidence]:
        return self.fit(raw, correct, chains).transform(raw, chains)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and, when fitted, the fitted state (``levels`` holds the fitted cuts)."""
        fitted = self.is_fitted
        return {"estimators": list(self.estimators), "normalizer": self.normalizer,
                "lower_pct": self.lower_pct, "upper_pct": self.upper_pct,
                "fusion": self.fusion.to_dict(),
                "levels": (self.levels_ if fitted else self.levels).to_dict(),
                "answer_step": self.answer_step,
                "answer_levels": (self.answer_levels_.to_dict()
                                  if fitted and self.answer_step != "own" else None),
                "discrimination": getattr(self, "discrimination_", None) if fitted else None,
                "normalizers": ({k: v.to_dict() for k, v in self.normalizers_.items()}
                                if fitted else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfidenceCalibrator:
        """Rebuild from ``to_dict`` output (also files written before the quantile level rule:
        their levels load as the sigma rule with the saved cuts)."""
        fitted_levels = LevelCuts.from_dict(data["levels"])
        cal = cls(estimators=tuple(data["estimators"]), normalizer=data["normalizer"],
                  lower_pct=data.get("lower_pct", 1.0), upper_pct=data.get("upper_pct", 99.0),
                  fusion=Fusion.from_dict(data["fusion"]),
                  levels=replace(fitted_levels),  # its parameters, unfitted
                  answer_step=data.get("answer_step", "own"))  # "own" before the option
        cal._check_params()
        normalizers = data.get("normalizers") or {}
        if normalizers and hasattr(fitted_levels, "cuts_"):
            cal.normalizers_ = {k: normalizer_from_dict(v) for k, v in normalizers.items()}
            cal.levels_ = fitted_levels
            cal.discrimination_ = data.get("discrimination")
            if cal.answer_step != "own":
                if not data.get("answer_levels"):
                    raise ValueError(f"answer_step {cal.answer_step!r} without fitted answer_levels")
                cal.answer_levels_ = LevelCuts.from_dict(data["answer_levels"])
        return cal

    def save(self, path: str | Path) -> Path:
        """Write the calibrator as JSON atomically (tmp file + os.replace)."""
        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConfidenceCalibrator:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not a saved ConfidenceCalibrator ({err!r})") from err


def step_discrimination(normalized: Mapping[str, np.ndarray], fused: Sequence[float | None],
                        y: np.ndarray) -> dict[str, float | None]:
    """{estimator or "fused": AUROC of that confidence for step correctness ``y`` (1/0, NaN =
    unjudged; ``fusion.labels_array``)} over the judged steps that have it (scikit-learn's
    ``roc_auc_score``; None where those steps are all right or all wrong). Below .5 an estimator
    ranks wrong steps above right ones (ShapesWorld's U_CLIPS on the vanilla model's train
    steps: .34).

    >>> y = np.array([0, 1, 1, 0.])
    >>> step_discrimination({"a": np.array([.1, .9, .8, np.nan])}, [.2, .7, None, .9], y)
    {'a': 1.0, 'fused': 0.5}
    """
    from sklearn.metrics import roc_auc_score

    columns = {**{k: np.asarray(v, dtype=np.float64) for k, v in normalized.items()},
               "fused": np.array([np.nan if c is None else c for c in fused], dtype=np.float64)}
    out: dict[str, float | None] = {}
    for name, x in columns.items():
        use = np.isfinite(x) & np.isfinite(y)
        out[name] = (round(float(roc_auc_score(y[use], x[use])), 6)
                     if len(np.unique(y[use])) == 2 else None)
    return out


def _normalized_columns(raw: Sequence[Mapping[str, float]], estimators: Sequence[str],
                        normalizers: Mapping[str, Normalizer]) -> dict[str, np.ndarray]:
    """{estimator: c_i = normaliser_i(raw_i) of each step, NaN where the step lacks it}."""
    out = {}
    for name in estimators:
        column = np.array([r.get(name, np.nan) for r in raw], dtype=np.float64)
        out[name] = np.where(np.isfinite(column), normalizers[name].transform(column), np.nan)
    return out


def _fuse(normalized: Mapping[str, np.ndarray], estimators: Sequence[str],
          fusion: Fusion) -> list[StepConfidence]:
    """Each step's normalised confidences c_i (the estimators it has) and C = fusion(c) (None if
    it has none), from ``_normalized_columns``."""
    out = []
    for i in range(len(normalized[estimators[0]])):
        cs = {n: float(normalized[n][i]) for n in estimators if np.isfinite(normalized[n][i])}
        out.append(StepConfidence(cs, fusion(cs) if cs else None, None))
    return out
