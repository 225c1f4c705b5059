"""Fuse the normalised estimator confidences into one step confidence C, and cut C into levels.

METHOD.md section 3. Fusion (paper): the weighted mean C = sum_i w_i c_i, default w_i = 1/4
**(ours: equal weights)**; ablation "w U_Max": max pooling C = max_i c_i; ablation "w/o U_X": drop
estimator X by configuration (the remaining weights are renormalised to sum to 1).
Levels (paper: 5 levels from the distribution's mean and spread): with mu, sigma of C over the
fitted set, cut points mu + k * sigma for k in (-1.5, -0.5, 0.5, 1.5) **(ours: the offsets)**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

FUSIONS = ("mean", "max")
DEFAULT_CUT_OFFSETS = (-1.5, -0.5, 0.5, 1.5)


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


@dataclass
class Fusion:
    """Configured fusion: ``method`` "mean" or "max", per-estimator ``weights`` (default equal).

    A step missing an estimator (e.g. CLIPS for a sample without an image) is fused over the
    estimators it has, weights renormalised **(ours)**.
    """

    method: str = "mean"
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise ValueError(f"fusion method must be one of {FUSIONS}, got {self.method!r}")
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"fusion weights must be >= 0, got {bad}")

    def __call__(self, confidences: Mapping[str, float]) -> float:
        if self.method == "max":
            return fuse_max(confidences)
        weights = {k: self.weights.get(k, 1.0) for k in confidences}
        return fuse_mean(confidences, weights)

    def to_dict(self) -> dict:
        return {"method": self.method, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fusion:
        return cls(method=data["method"], weights=dict(data.get("weights", {})))


@dataclass
class LevelCuts:
    """Five confidence levels from cut points mu + k * sigma of the fitted fused scores.

    ``level(C) = 1 + #{cuts <= C}``: C below mu - 1.5 sigma is level 1, above mu + 1.5 sigma
    level 5. sigma is the population standard deviation (ddof=0). Fitting needs at least
    ``min_count`` scores that are not all equal.
    """

    offsets: tuple[float, ...] = DEFAULT_CUT_OFFSETS
    min_count: int = 10
    mean_: float | None = None
    std_: float | None = None
    cuts_: list[float] | None = None

    def fit(self, fused: Sequence[float] | np.ndarray) -> LevelCuts:
        x = np.asarray(fused, dtype=np.float64)
        if list(self.offsets) != sorted(self.offsets):
            raise ValueError(f"level cut offsets must be increasing, got {self.offsets}")
        if x.size < self.min_count:
            raise ValueError(f"fitting level cuts needs >= {self.min_count} fused step "
                             f"confidences, got {x.size}")
        if not np.all(np.isfinite(x)):
            raise ValueError("fitting level cuts: fused confidences contain NaN/inf")
        std = float(x.std())
        if np.all(x == x[0]):
            raise ValueError(f"fitting level cuts: all {x.size} fused confidences equal "
                             f"{x[0]:.6g}; levels need a spread")
        self.mean_, self.std_ = float(x.mean()), std
        self.cuts_ = [self.mean_ + k * std for k in self.offsets]
        return self

    def level(self, confidence: float) -> int:
        if self.cuts_ is None:
            raise RuntimeError("LevelCuts is not fitted: call fit() or load a fitted calibrator")
        return int(1 + np.searchsorted(self.cuts_, confidence, side="right"))

    def to_dict(self) -> dict:
        return {"offsets": list(self.offsets), "min_count": self.min_count, "mean": self.mean_,
                "std": self.std_, "cuts": self.cuts_}

    @classmethod
    def from_dict(cls, data: Mapping) -> LevelCuts:
        return cls(offsets=tuple(data["offsets"]), min_count=data.get("min_count", 10),
                   mean_=data.get("mean"), std_=data.get("std"), cuts_=data.get("cuts"))
