"""Per-estimator normalisers and the fitted calibrator (normalise -> fuse -> level).

METHOD.md section 3 **(ours)**: each estimator's raw score is mapped, per model, to a confidence
c in [0, 1] by a normaliser fitted on a reference set of steps; uncertainties are flipped
(c = 1 - scaled u). Default: robust min-max between the 1st and 99th percentiles, clipped;
alternative: the empirical CDF (quantile). scikit-learn style: constructor parameters, ``fit``,
``transform``, fitted attributes ending in ``_``, ``to_dict``/``from_dict``/``save``/``load``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmboundary.confidence.estimators import ESTIMATORS, is_uncertainty
from mmboundary.confidence.fusion import DEFAULT_CUT_OFFSETS, Fusion, LevelCuts
from mmboundary.data.io import write_json_atomic


def _fit_values(x: Sequence[float] | np.ndarray, name: str, min_count: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"normaliser {name!r}: reference scores contain NaN/inf")
    if arr.size < min_count:
        raise ValueError(f"normaliser {name!r}: fitting needs >= {min_count} reference scores, "
                         f"got {arr.size}")
    if np.all(arr == arr[0]):
        raise ValueError(f"normaliser {name!r}: all {arr.size} reference scores equal "
                         f"{arr[0]:.6g}; a constant estimator cannot be scaled")
    return arr


@dataclass
class RobustMinMaxNormalizer:
    """c = clip((x - q_lo) / (q_hi - q_lo), 0, 1), flipped to 1 - c when ``uncertainty``.

    q_lo, q_hi = the ``lower_pct``/``upper_pct`` percentiles of the reference scores (default 1
    and 99: a few outliers do not squash everyone else). Constant reference scores are an error.
    """

    lower_pct: float = 1.0
    upper_pct: float = 99.0
    uncertainty: bool = True
    name: str = ""
    min_count: int = 2
    low_: float | None = None
    high_: float | None = None

    def fit(self, x: Sequence[float] | np.ndarray) -> RobustMinMaxNormalizer:
        if not 0 <= self.lower_pct < self.upper_pct <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got "
                             f"{self.lower_pct}, {self.upper_pct}")
        arr = _fit_values(x, self.name, self.min_count)
        low, high = np.percentile(arr, [self.lower_pct, self.upper_pct])
        if high <= low:  # mass concentrated in one value: fall back to the full range
            low, high = arr.min(), arr.max()
        self.low_, self.high_ = float(low), float(high)
        return self

    def transform(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        if self.low_ is None or self.high_ is None:
            raise RuntimeError(f"normaliser {self.name!r} is not fitted")
        scaled = np.clip((np.asarray(x, dtype=np.float64) - self.low_) / (self.high_ - self.low_),
                         0.0, 1.0)
        return 1.0 - scaled if self.uncertainty else scaled

    def to_dict(self) -> dict:
        return {"kind": "robust_minmax", "name": self.name, "uncertainty": self.uncertainty,
                "lower_pct": self.lower_pct, "upper_pct": self.upper_pct, "low": self.low_,
                "high": self.high_}


@dataclass
class QuantileNormalizer:
    """c = F(x), the empirical CDF of the reference scores (1 - F(x) when ``uncertainty``).

    F is stored as ``n_quantiles`` reference quantiles and interpolated linearly; ties are
    averaged as in scikit-learn's ``QuantileTransformer``. Constant reference scores are an error.
    """

    n_quantiles: int = 1000
    uncertainty: bool = True
    name: str = ""
    min_count: int = 2
    quantiles_: list[float] | None = None

    def fit(self, x: Sequence[float] | np.ndarray) -> QuantileNormalizer:
        arr = _fit_values(x, self.name, self.min_count)
        n = max(2, min(self.n_quantiles, arr.size))
        self.quantiles_ = np.quantile(arr, np.linspace(0.0, 1.0, n)).tolist()
        return self

    def transform(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        if self.quantiles_ is None:
            raise RuntimeError(f"normaliser {self.name!r} is not fitted")
        q = np.asarray(self.quantiles_)
        refs = np.linspace(0.0, 1.0, q.size)
        v = np.asarray(x, dtype=np.float64)
        cdf = 0.5 * (np.interp(v, q, refs) - np.interp(-v, -q[::-1], -refs[::-1]))
        cdf = np.clip(cdf, 0.0, 1.0)
        return 1.0 - cdf if self.uncertainty else cdf

    def to_dict(self) -> dict:
        return {"kind": "quantile", "name": self.name, "uncertainty": self.uncertainty,
                "n_quantiles": self.n_quantiles, "quantiles": self.quantiles_}


Normalizer = RobustMinMaxNormalizer | QuantileNormalizer
NORMALIZERS = ("robust_minmax", "quantile")


def normalizer_from_dict(data: Mapping) -> Normalizer:
    """Rebuild a fitted normaliser from ``to_dict`` output."""
    kind = data.get("kind")
    if kind == "robust_minmax":
        return RobustMinMaxNormalizer(lower_pct=data["lower_pct"], upper_pct=data["upper_pct"],
                                      uncertainty=data["uncertainty"], name=data["name"],
                                      low_=data["low"], high_=data["high"])
    if kind == "quantile":
        return QuantileNormalizer(n_quantiles=data["n_quantiles"], uncertainty=data["uncertainty"],
                                  name=data["name"], quantiles_=data["quantiles"])
    raise ValueError(f"normaliser kind must be one of {NORMALIZERS}, got {kind!r}")


def make_normalizer(kind: str, name: str, *, lower_pct: float = 1.0,
                    upper_pct: float = 99.0) -> Normalizer:
    """A fresh normaliser for estimator ``name`` (direction taken from the estimator)."""
    if kind == "robust_minmax":
        return RobustMinMaxNormalizer(lower_pct, upper_pct, is_uncertainty(name), name)
    if kind == "quantile":
        return QuantileNormalizer(uncertainty=is_uncertainty(name), name=name)
    raise ValueError(f"normaliser kind must be one of {NORMALIZERS}, got {kind!r}")


@dataclass
class StepConfidence:
    """What the calibrator gives one step: normalised scores, fused confidence, level."""

    normalized: dict[str, float]
    confidence: float | None
    level: int | None


@dataclass
class ConfidenceCalibrator:
    """Per-estimator normalisers + fusion + level cut points, fitted on a reference set of steps.

    ``fit(raw)`` takes one ``{estimator: raw score}`` dict per step (a step may lack an estimator;
    estimators not in ``estimators`` are ignored), fits each normaliser on the scores it has, fuses
    the normalised confidences and fits the level cuts on the fused values. ``transform(raw)``
    gives each step's ``StepConfidence``.
    """

    estimators: tuple[str, ...] = ESTIMATORS
    normalizer: str = "robust_minmax"
    lower_pct: float = 1.0
    upper_pct: float = 99.0
    fusion: Fusion = field(default_factory=Fusion)
    levels: LevelCuts = field(default_factory=lambda: LevelCuts(DEFAULT_CUT_OFFSETS))
    normalizers_: dict[str, Normalizer] = field(default_factory=dict)

    def fit(self, raw: Sequence[Mapping[str, float]]) -> ConfidenceCalibrator:
        if not self.estimators:
            raise ValueError("the calibrator needs at least one estimator")
        self.normalizers_ = {}
        for name in self.estimators:
            values = [r[name] for r in raw if name in r]
            if not values:
                raise ValueError(f"calibrator: no step in the reference set of {len(raw)} steps "
                                 f"has a raw {name!r} score (switch it off with estimators=...)")
            norm = make_normalizer(self.normalizer, name, lower_pct=self.lower_pct,
                                   upper_pct=self.upper_pct)
            self.normalizers_[name] = norm.fit(values)
        fused = [c.confidence for c in self._apply(raw) if c.confidence is not None]
        self.levels.fit(fused)
        return self

    def _apply(self, raw: Sequence[Mapping[str, float]]) -> list[StepConfidence]:
        if not self.normalizers_:
            raise RuntimeError("ConfidenceCalibrator is not fitted: call fit() or load()")
        columns = {name: np.array([r.get(name, np.nan) for r in raw], dtype=np.float64)
                   for name in self.estimators}
        normalized = {name: self.normalizers_[name].transform(col) for name, col in columns.items()}
        out = []
        for i in range(len(raw)):
            cs = {n: float(normalized[n][i]) for n in self.estimators if np.isfinite(columns[n][i])}
            conf = self.fusion(cs) if cs else None
            out.append(StepConfidence(cs, conf, None))
        return out

    def transform(self, raw: Sequence[Mapping[str, float]]) -> list[StepConfidence]:
        out = self._apply(raw)
        for item in out:
            if item.confidence is not None:
                item.level = self.levels.level(item.confidence)
        return out

    def fit_transform(self, raw: Sequence[Mapping[str, float]]) -> list[StepConfidence]:
        return self.fit(raw).transform(raw)

    def to_dict(self) -> dict:
        return {"estimators": list(self.estimators), "normalizer": self.normalizer,
                "lower_pct": self.lower_pct, "upper_pct": self.upper_pct,
                "fusion": self.fusion.to_dict(), "levels": self.levels.to_dict(),
                "normalizers": {k: v.to_dict() for k, v in self.normalizers_.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> ConfidenceCalibrator:
        return cls(estimators=tuple(data["estimators"]), normalizer=data["normalizer"],
                   lower_pct=data.get("lower_pct", 1.0), upper_pct=data.get("upper_pct", 99.0),
                   fusion=Fusion.from_dict(data["fusion"]),
                   levels=LevelCuts.from_dict(data["levels"]),
                   normalizers_={k: normalizer_from_dict(v)
                                 for k, v in data.get("normalizers", {}).items()})

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
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a saved ConfidenceCalibrator ({err!r})") from err
