"""Normalisers, fusion, level cuts and the calibrator: hand-computed values and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.confidence.fusion import Fusion, LevelCuts, fuse_max, fuse_mean
from mmboundary.confidence.normalize import (
    ConfidenceCalibrator,
    QuantileNormalizer,
    RobustMinMaxNormalizer,
    normalizer_from_dict,
)


def test_robust_minmax_hand_computed():
    x = np.arange(101.0)  # 1st / 99th percentiles are 1 and 99
    norm = RobustMinMaxNormalizer(uncertainty=True, name="lnlp").fit(x)
    assert (norm.low_, norm.high_) == pytest.approx((1.0, 99.0))
    np.testing.assert_allclose(norm.transform([50.0, 0.0, 99.0, 500.0]), [0.5, 1.0, 0.0, 0.0])
    conf = RobustMinMaxNormalizer(lower_pct=0, upper_pct=100, uncertainty=False).fit([2.0, 4.0])
    np.testing.assert_allclose(conf.transform([3.0, 2.5, 5.0]), [0.5, 0.25, 1.0])


def test_quantile_is_the_empirical_cdf():
    norm = QuantileNormalizer(n_quantiles=5, uncertainty=False).fit([5, 1, 3, 2, 4])
    np.testing.assert_allclose(norm.transform([3.0, 2.5, 0.0, 10.0]), [0.5, 0.375, 0.0, 1.0])
    flipped = QuantileNormalizer(n_quantiles=5, uncertainty=True).fit([5, 1, 3, 2, 4])
    np.testing.assert_allclose(flipped.transform([2.5]), [0.625])
    # ties are averaged, as in scikit-learn's QuantileTransformer
    tied = QuantileNormalizer(n_quantiles=5, uncertainty=False).fit([1, 2, 2, 2, 3])
    np.testing.assert_allclose(tied.transform([2.0]), [0.5])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=50, unique=True),
       st.floats(-2e3, 2e3), st.sampled_from(["minmax", "quantile"]))
def test_normalisers_map_into_unit_interval_and_keep_order(ref, value, kind):
    norm = (RobustMinMaxNormalizer(uncertainty=True) if kind == "minmax"
            else QuantileNormalizer(uncertainty=True)).fit(ref)
    out = norm.transform([value, value + 1.0])
    assert np.all((out >= 0) & (out <= 1))
    assert out[0] >= out[1]  # an uncertainty: more uncertain -> less confident
    again = normalizer_from_dict(norm.to_dict()).transform([value])
    np.testing.assert_allclose(again, out[:1])


@pytest.mark.parametrize("cls", [RobustMinMaxNormalizer, QuantileNormalizer])
def test_degenerate_reference_sets_fail_clearly(cls):
    with pytest.raises(ValueError, match="all 4 reference scores equal 2"):
        cls(name="mte").fit([2.0] * 4)
    with pytest.raises(ValueError, match=">= 2 reference scores, got 1"):
        cls(name="mte").fit([2.0])
    with pytest.raises(ValueError, match="NaN"):
        cls(name="mte").fit([1.0, float("nan")])
    with pytest.raises(RuntimeError, match="not fitted"):
        cls(name="mte").transform([1.0])


def test_fusion_mean_max_weights_and_missing():
    assert fuse_mean({"a": 0.2, "b": 0.6}) == pytest.approx(0.4)
    assert fuse_mean({"a": 0.2, "b": 0.6}, {"a": 3, "b": 1}) == pytest.approx(0.3)
    assert fuse_max({"a": 0.2, "b": 0.6}) == pytest.approx(0.6)
    four = {"lnlp": 0.1, "mte": 0.3, "tokensar": 0.5, "clips": 0.9}
    assert Fusion()(four) == pytest.approx(0.45)  # w_i = 1/4
    assert Fusion("max")(four) == pytest.approx(0.9)
    without_clips = {k: v for k, v in four.items() if k != "clips"}
    assert Fusion()(without_clips) == pytest.approx(0.3)  # renormalised to 1/3 each
    with pytest.raises(ValueError, match="fusion method"):
        Fusion("median")


def test_level_cuts_hand_computed():
    cuts = LevelCuts().fit([0.0, 1.0] * 5)  # mu = 0.5, sigma = 0.5
    assert cuts.cuts_ == pytest.approx([-0.25, 0.25, 0.75, 1.25])
    assert [cuts.level(c) for c in (-0.3, 0.0, 0.25, 0.5, 1.0, 1.3)] == [1, 2, 3, 3, 4, 5]
    custom = LevelCuts(offsets=(-1.0, 0.0, 1.0, 2.0)).fit([0.0, 1.0] * 5)
    assert custom.cuts_ == pytest.approx([0.0, 0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="all 10 fused confidences equal"):
        LevelCuts().fit([0.3] * 10)
    with pytest.raises(ValueError, match=">= 10 fused step confidences, got 3"):
        LevelCuts().fit([0.1, 0.2, 0.3])


def _raw_steps(n: int = 40, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{"lnlp": float(rng.uniform(1, 5)), "mte": float(rng.uniform(0, 3)),
             "tokensar": float(rng.uniform(0, 2)), "clips": float(rng.uniform(0, 0.4))}
            for _ in range(n)]


def test_calibrator_fit_transform_matches_the_parts(tmp_path):
    raw = _raw_steps()
    cal = ConfidenceCalibrator(lower_pct=0, upper_pct=100).fit(raw)
    out = cal.transform(raw)
    lnlp = np.array([r["lnlp"] for r in raw])
    expected_lnlp = 1 - (lnlp - lnlp.min()) / (lnlp.max() - lnlp.min())
    np.testing.assert_allclose([o.normalized["lnlp"] for o in out], expected_lnlp)
    fused = np.array([o.confidence for o in out])
    np.testing.assert_allclose(fused, [np.mean(list(o.normalized.values())) for o in out])
    mu, sd = fused.mean(), fused.std()
    expected_levels = 1 + np.searchsorted(mu + sd * np.array([-1.5, -0.5, 0.5, 1.5]), fused,
                                          side="right")
    assert [o.level for o in out] == expected_levels.tolist()
    loaded = ConfidenceCalibrator.load(cal.save(tmp_path / "calibrator.json"))
    again = loaded.transform(raw)
    assert [o.level for o in again] == [o.level for o in out]
    np.testing.assert_allclose([o.confidence for o in again], fused)


def test_calibrator_ablations_and_missing_scores():
    raw = _raw_steps()
    no_clips = ConfidenceCalibrator(estimators=("lnlp", "mte", "tokensar"),
                                    normalizer="quantile").fit(raw)
    assert set(no_clips.transform(raw[:1])[0].normalized) == {"lnlp", "mte", "tokensar"}
    maxed = ConfidenceCalibrator(fusion=Fusion("max")).fit(raw)
    first = maxed.transform(raw[:1])[0]
    assert first.confidence == pytest.approx(max(first.normalized.values()))
    partial = [*raw, {"lnlp": 2.0, "mte": 1.0, "tokensar": 1.0}, {}]
    out = ConfidenceCalibrator().fit(partial).transform(partial)
    assert set(out[-2].normalized) == {"lnlp", "mte", "tokensar"} and out[-2].level is not None
    assert out[-1].confidence is None and out[-1].level is None
    with pytest.raises(ValueError, match="has a raw 'clips' score"):
        ConfidenceCalibrator().fit([{k: v for k, v in r.items() if k != "clips"} for r in raw])
    with pytest.raises(RuntimeError, match="not fitted"):
        ConfidenceCalibrator().transform(raw)


def test_calibrator_load_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a saved ConfidenceCalibrator"):
        ConfidenceCalibrator.load(path)
