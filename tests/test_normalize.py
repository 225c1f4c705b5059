"""Normalisers, fusion, level cuts and the calibrator: hand-computed values and round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.confidence.fusion import (
    DEFAULT_CUT_OFFSETS,
    EmptyLevelWarning,
    Fusion,
    LevelCuts,
    fuse_max,
    fuse_mean,
    normal_cdf,
)
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
    with pytest.raises(ValueError, match="Fusion.method must be one of"):
        Fusion("median")


def test_level_cuts_sigma_rule_hand_computed():
    with pytest.warns(EmptyLevelWarning, match=r"level\(s\) \[1, 3, 5\] hold none of the 10"):
        cuts = LevelCuts(rule="sigma").fit([0.0, 1.0] * 5)  # mu = 0.5, sigma = 0.5
    assert cuts.cuts_ == pytest.approx([-0.25, 0.25, 0.75, 1.25])
    assert cuts.counts_ == {1: 0, 2: 5, 3: 0, 4: 5, 5: 0}
    assert [cuts.level(c) for c in (-0.3, 0.0, 0.25, 0.5, 1.0, 1.3)] == [1, 2, 3, 3, 4, 5]
    with pytest.warns(EmptyLevelWarning):
        custom = LevelCuts(rule="sigma", offsets=(-1.0, 0.0, 1.0, 2.0)).fit([0.0, 1.0] * 5)
    assert custom.cuts_ == pytest.approx([0.0, 0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="all 10 fused confidences equal"):
        LevelCuts().fit([0.3] * 10)
    with pytest.raises(ValueError, match=r">= 10 fused step confidences \(min_count\), got 3"):
        LevelCuts().fit([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="LevelCuts.rule must be one of"):
        LevelCuts(rule="median").fit(np.arange(20.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        LevelCuts(offsets=(0.5, -0.5)).fit(np.arange(20.0))


def test_level_cuts_quantile_rule_hand_computed():
    assert [round(100 * normal_cdf(k), 2) for k in DEFAULT_CUT_OFFSETS] == [6.68, 30.85, 69.15,
                                                                             93.32]
    x = np.arange(101.0)  # the q-th quantile of 0..100 is 100 q
    cuts = LevelCuts().fit(x)
    assert cuts.rule == "quantile"
    assert cuts.cuts_ == pytest.approx([100 * normal_cdf(k) for k in DEFAULT_CUT_OFFSETS])
    assert cuts.counts_ == {1: 7, 2: 24, 3: 39, 4: 24, 5: 7}  # 0..6, 7..30, 31..69, ...
    assert cuts.mean_ == pytest.approx(50.0) and cuts.std_ == pytest.approx(x.std())
    np.testing.assert_array_equal(cuts.transform([0.0, 6.9, 30.86, 93.4, 200.0]), [1, 2, 3, 5, 5])


def _demo_like_fused(n: int = 1677, seed: int = 0) -> np.ndarray:
    """Skewed and clipped at 1, as the ShapesWorld demo's fused C (mu ~ .73, sigma ~ .2)."""
    rng = np.random.default_rng(seed)
    return np.clip(1.05 - rng.gamma(2.0, 0.16, n), 0.0, 1.0)


def test_quantile_rule_reaches_every_level_where_the_sigma_rule_cannot():
    fused = _demo_like_fused()
    assert fused.mean() + 1.5 * fused.std() > 1.0  # the sigma rule's top cut is out of reach
    with pytest.warns(EmptyLevelWarning, match=r"level\(s\) \[5\]"):
        sigma = LevelCuts(rule="sigma").fit(fused)
    assert sigma.counts_[5] == 0
    quantile = LevelCuts().fit(fused)
    shares = np.array(list(quantile.counts_.values())) / fused.size
    np.testing.assert_allclose(shares, [0.0668, 0.2417, 0.3829, 0.2417, 0.0668], atol=0.002)
    with pytest.raises(ValueError, match=r"level\(s\) \[5\] hold none"):
        LevelCuts(rule="sigma", empty_level="raise").fit(fused)


def test_ties_at_the_top_warn_about_the_empty_level():
    fused = np.r_[np.linspace(0.2, 0.9, 60), np.ones(40)]  # 40 % clipped at exactly 1
    with pytest.warns(EmptyLevelWarning, match=r"level\(s\) \[4\]"):
        cuts = LevelCuts().fit(fused)
    assert cuts.counts_[4] == 0 and cuts.counts_[5] == 40


def test_level_cuts_fitted_state_only_after_fit_and_input_untouched():
    cuts = LevelCuts()
    for attr in ("cuts_", "counts_", "mean_", "std_"):
        assert not hasattr(cuts, attr)
    with pytest.raises(RuntimeError, match="not fitted"):
        cuts.level(0.5)
    x = np.linspace(0.0, 1.0, 30)
    before = x.copy()
    assert cuts.fit(x) is cuts
    np.testing.assert_array_equal(x, before)
    again = LevelCuts.from_dict(cuts.to_dict())
    assert again == cuts and again.cuts_ == cuts.cuts_ and again.counts_ == cuts.counts_
    unfitted = LevelCuts.from_dict(LevelCuts(rule="sigma").to_dict())
    assert unfitted.rule == "sigma" and not hasattr(unfitted, "cuts_")


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
    q = np.quantile(fused, [0.0668072, 0.3085375, 0.6914625, 0.9331928])
    expected_levels = 1 + np.searchsorted(q, fused, side="right")
    assert [o.level for o in out] == expected_levels.tolist()
    assert cal.levels_.counts_ == {k: int((expected_levels == k).sum()) for k in range(1, 6)}
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


def test_calibrator_fit_sets_state_only_on_itself():
    raw = _raw_steps()
    frozen = [dict(r) for r in raw]
    template = LevelCuts(rule="sigma", empty_level="warn")
    cal = ConfidenceCalibrator(levels=template)
    assert not cal.is_fitted and not hasattr(cal, "normalizers_") and not hasattr(cal, "levels_")
    assert cal.fit(raw) is cal and cal.is_fitted
    assert raw == frozen  # the reference set is not modified
    assert not hasattr(template, "cuts_")  # the levels parameter is copied, never fitted
    assert cal.levels_.rule == "sigma" and sum(cal.levels_.counts_.values()) == len(raw)
    fresh = cal.clone()
    assert fresh == cal and not fresh.is_fitted and fresh.levels is not cal.levels
    unfitted = ConfidenceCalibrator.from_dict(ConfidenceCalibrator(normalizer="quantile").to_dict())
    assert unfitted.normalizer == "quantile" and not unfitted.is_fitted
    with pytest.raises(ValueError, match="ConfidenceCalibrator.estimators: unknown"):
        ConfidenceCalibrator(estimators=("lnlp", "perplexity")).fit(raw)
    with pytest.raises(ValueError, match="step 1 of the reference set is list"):
        ConfidenceCalibrator().fit([raw[0], [1.0, 2.0]])


def test_calibrator_round_trip_keeps_rule_and_counts(tmp_path):
    raw = _raw_steps()
    cal = ConfidenceCalibrator(normalizer="quantile").fit(raw)
    loaded = ConfidenceCalibrator.load(cal.save(tmp_path / "calibrator.json"))
    assert loaded == cal and loaded.levels_.rule == "quantile"
    assert loaded.levels_.cuts_ == pytest.approx(cal.levels_.cuts_)
    assert loaded.levels_.counts_ == cal.levels_.counts_
    assert [o.level for o in loaded.transform(raw)] == [o.level for o in cal.transform(raw)]


#: A calibrator JSON as written before the quantile rule (sigma cuts, no rule, no counts).
OLD_SIGMA_FILE = {
    "estimators": ["lnlp", "mte"], "normalizer": "robust_minmax", "lower_pct": 1.0,
    "upper_pct": 99.0, "fusion": {"method": "mean", "weights": {}},
    "levels": {"offsets": [-1.5, -0.5, 0.5, 1.5], "min_count": 10, "mean": 0.6, "std": 0.2,
               "cuts": [0.3, 0.5, 0.7, 0.9]},
    "normalizers": {
        "lnlp": {"kind": "robust_minmax", "name": "lnlp", "uncertainty": True, "lower_pct": 1.0,
                 "upper_pct": 99.0, "low": 1.0, "high": 3.0},
        "mte": {"kind": "robust_minmax", "name": "mte", "uncertainty": True, "lower_pct": 1.0,
                "upper_pct": 99.0, "low": 0.0, "high": 2.0}}}


def test_old_sigma_rule_calibrator_files_still_load(tmp_path):
    import json

    path = tmp_path / "old.calibrator.json"
    path.write_text(json.dumps(OLD_SIGMA_FILE))
    cal = ConfidenceCalibrator.load(path)
    assert cal.is_fitted and cal.levels.rule == "sigma" and cal.levels_.counts_ is None
    assert cal.levels_.cuts_ == [0.3, 0.5, 0.7, 0.9]
    # lnlp 2 -> c = .5, mte .4 -> c = .8: C = .65 (level 3); lnlp 1, mte 0 -> C = 1 (level 5)
    out = cal.transform([{"lnlp": 2.0, "mte": 0.4}, {"lnlp": 1.0, "mte": 0.0}])
    assert [o.confidence for o in out] == pytest.approx([0.65, 1.0])
    assert [o.level for o in out] == [3, 5]
    resaved = ConfidenceCalibrator.load(cal.save(tmp_path / "again.json"))
    assert resaved.levels_.cuts_ == cal.levels_.cuts_ and resaved.levels_.rule == "sigma"


def test_accuracy_rule_hand_computed_and_unearned_levels_stay_empty(tmp_path):
    # C .1 .. .8; correct 0 0 0 1 0 1 1 1: isotonic pools (.4, .5) to 0.5, so
    # p = 0 0 0 .5 .5 1 1 1; p crosses .2 and .4 between .3 and .4 (cut .35),
    # .6 and .8 between .5 and .6 (cut .55): levels 1 1 1 3 3 5 5 5, levels 2 and 4 empty
    fused = [.1, .2, .3, .4, .5, .6, .7, .8]
    correct = [0, 0, 0, 1, 0, 1, 1, 1]
    cuts = LevelCuts(rule="accuracy", min_count=4).fit(fused, correct)
    assert cuts.cuts_ == pytest.approx([.35, .35, .55, .55])
    assert cuts.counts_ == {1: 3, 2: 0, 3: 2, 4: 0, 5: 3}
    assert cuts.accuracy_ == {1: 0.0, 2: None, 3: 0.5, 4: None, 5: 1.0}
    # never right more than half the time: levels 4 and 5 get +inf cuts (never said), which
    # survive a save/load; p = 0 0 0 0 .5 .5 .5 .5
    low = LevelCuts(rule="accuracy", min_count=4).fit(fused, [0, 0, 0, 0, 1, 0, 1, 0])
    assert low.cuts_ == [pytest.approx(.45), pytest.approx(.45), float("inf"), float("inf")]
    assert low.level(1.0) == 3 and low.counts_ == {1: 4, 2: 0, 3: 4, 4: 0, 5: 0}
    raw = [{"lnlp": -float(c)} for c in fused]  # lnlp is an uncertainty: higher = worse
    cal = ConfidenceCalibrator(estimators=("lnlp",), levels=LevelCuts(rule="accuracy",
                                                                      min_count=4))
    cal.fit(raw, [0, 0, 0, 0, 1, 0, 1, 0])
    loaded = ConfidenceCalibrator.load(cal.save(tmp_path / "accuracy.json"))
    assert loaded.levels_.cuts_ == cal.levels_.cuts_ and loaded.levels_.rule == "accuracy"
    assert loaded.levels_.accuracy_ == cal.levels_.accuracy_
    with pytest.raises(ValueError, match="accuracy rule.*needs the step correctness"):
        LevelCuts(rule="accuracy").fit(np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="3 correctness labels for 8"):
        LevelCuts(rule="accuracy", min_count=4).fit(fused, [0, 1, 1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=12, max_size=80))
def test_accuracy_rule_levels_hold_steps_as_often_right_as_they_say(pairs):
    fused = [c for c, _ in pairs]
    if len(set(fused)) == 1:
        return
    correct = [float(y) for _, y in pairs]
    cuts = LevelCuts(rule="accuracy").fit(fused, correct)
    levels = cuts.transform(fused)
    for k, acc in cuts.accuracy_.items():  # level k's steps are right (k-1)/5 .. k/5 of the time
        assert (acc is None) == (not np.any(levels == k))
        if acc is not None:
            assert (k - 1) / 5 - 1e-9 <= acc <= k / 5 + 1e-9, (k, acc)
    order = np.argsort(fused, kind="stable")
    assert np.all(np.diff(levels[order]) >= 0)  # monotone in C


def test_fusion_doctests() -> None:
    import doctest

    from mmboundary.confidence import fusion

    result = doctest.testmod(fusion)
    assert result.failed == 0 and result.attempted >= 2


def test_answer_step_takes_its_chains_least_confidence_and_cuts_of_its_own(tmp_path):
    # one estimator, lnlp (an uncertainty): C = 1 - (u - min) / (max - min) with min 0, max 1
    # (lower_pct 0, upper_pct 100), so raw u gives C = 1 - u. Six chains of three steps:
    # non-answer steps C .9/.2, .8/.3, .7/.4, .6/.1, .95/.5, .85/.15 (the chain minima
    # .2 .3 .4 .1 .5 .15), answer steps' own C always .99 (a copy of what the chain decided)
    pairs = [(.9, .2), (.8, .3), (.7, .4), (.6, .1), (.95, .5), (.85, .15)]
    raw, correct, chains = [], [], []
    for (a, b), right in zip(pairs, [0, 0, 1, 0, 1, 0], strict=True):
        raw += [{"lnlp": 1 - a}, {"lnlp": 1 - b}, {"lnlp": 0.01}]
        correct += [1, 0, right]
        chains.append(3)
    raw += [{"lnlp": 0.0}, {"lnlp": 1.0}]  # a two-step chain pins the normaliser's range
    correct += [1, 0]
    chains.append(2)
    levels = LevelCuts(rule="accuracy", min_count=4)
    cal = ConfidenceCalibrator(estimators=("lnlp",), lower_pct=0, upper_pct=100, levels=levels,
                               answer_step="chain_min").fit(raw, correct, chains)
    out = cal.transform(raw, chains)
    answers = [2, 5, 8, 11, 14, 17, 19]
    assert [out[i].confidence for i in answers] == pytest.approx([.2, .3, .4, .1, .5, .15, 0])
    # answer cuts: C .1 .15 .2 .3 .4 .5 | 0 (the last chain's min, wrong) -> correct
    # 0 0 0 0 1 1 | 0: isotonic p = 0 0 0 0 0 1 1, crossing .2 .. .8 between .3 and .4
    assert cal.answer_levels_.cuts_ == pytest.approx([.35] * 4)
    assert [out[i].level for i in answers] == [1, 1, 5, 1, 5, 1, 1]
    # the other steps' cuts are fitted on them alone: C .9 .8 .7 .6 .95 .85 right, .2 .3 .4 .1
    # .5 .15 wrong, the two-step chain's first step 1.0 right -> p jumps from 0 to 1 between
    # .5 and .6
    assert cal.levels_.cuts_ == pytest.approx([.55] * 4)
    assert sum(cal.levels_.counts_.values()) == 13 and sum(cal.answer_levels_.counts_.values()) == 7
    # without chains every step is a plain step (partial chains, guided decoding)
    plain = cal.transform(raw)
    assert plain[2].confidence == pytest.approx(.99) and plain[2].level == 5
    # "own" keeps one set of cuts for every step, as before the option
    own = ConfidenceCalibrator(estimators=("lnlp",), lower_pct=0, upper_pct=100,
                               levels=levels).fit(raw, correct, chains)
    assert own.transform(raw, chains)[2].confidence == pytest.approx(.99)
    assert not hasattr(own, "answer_levels_")
    mean = ConfidenceCalibrator(estimators=("lnlp",), lower_pct=0, upper_pct=100, levels=levels,
                                answer_step="chain_mean").fit(raw, correct, chains)
    assert mean.transform(raw, chains)[2].confidence == pytest.approx((.9 + .2 + .99) / 3)
    loaded = ConfidenceCalibrator.load(cal.save(tmp_path / "answer.json"))
    assert loaded.answer_step == "chain_min"
    assert loaded.answer_levels_.cuts_ == cal.answer_levels_.cuts_
    assert [o.level for o in loaded.transform(raw, chains)] == [o.level for o in out]
    broken = json.loads((tmp_path / "answer.json").read_text())
    broken["answer_levels"] = None
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="broken.json.*without fitted answer_levels"):
        ConfidenceCalibrator.load(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="needs chains"):
        cal.clone().fit(raw, correct)
    with pytest.raises(ValueError, match="summing to the 20 steps"):
        cal.transform(raw, [3, 3])
    with pytest.raises(ValueError, match="answer_step: expected one of"):
        ConfidenceCalibrator(answer_step="last").fit(raw, correct, chains)


def _fitted_fusion_data(n: int = 400, seed: int = 0):
    """Steps whose correctness follows two informative confidences (a, b) and goes *against* a
    third (c): P(right) = sigmoid(3a + 1.5b - 2c - 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 3))
    p = 1 / (1 + np.exp(-(3 * x[:, 0] + 1.5 * x[:, 1] - 2 * x[:, 2] - 1)))
    return x, (rng.uniform(size=n) < p).astype(float)


def test_nonnegative_logistic_weights_match_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from mmboundary.confidence.fusion import FITTED_FUSION_L2, nonnegative_logistic_weights

    x, y = _fitted_fusion_data()
    # sklearn minimises |w|^2 / 2 + C * sum(log-loss), ours mean(log-loss) + l2 |w|^2: the same
    # optimum at C = 1 / (2 n l2); the intercept is free in both
    ref = LogisticRegression(C=1 / (2 * len(y) * FITTED_FUSION_L2), tol=1e-10, max_iter=10_000)
    # where the free fit's weights are positive the bound is inactive: the same weights
    free = ref.fit(x[:, :2], y).coef_[0]
    assert np.all(free > 0)
    np.testing.assert_allclose(nonnegative_logistic_weights(x[:, :2], y), free, rtol=1e-4)
    # the third column goes against correctness: the free fit gives it a negative weight, ours
    # holds it at 0, and the other two are then the free fit without it
    assert ref.fit(x, y).coef_[0][2] < 0
    w = nonnegative_logistic_weights(x, y)
    assert w[2] == 0.0
    np.testing.assert_allclose(w[:2], free, rtol=1e-4)


def test_fitted_fusion_is_the_weighted_mean_with_fitted_weights(tmp_path):
    x, y = _fitted_fusion_data(1500)
    # raw scores: lnlp / mte are uncertainties (flipped by the normaliser), clips a confidence
    raw = [{"lnlp": -a, "mte": -b, "clips": c} for a, b, c in x]
    cal = ConfidenceCalibrator(estimators=("lnlp", "mte", "clips"), lower_pct=0, upper_pct=100,
                               fusion=Fusion("fitted"))
    out = cal.fit(raw, y.tolist()).transform(raw)
    w = cal.fusion.weights
    assert sum(w.values()) == pytest.approx(1.0) and w["clips"] == 0.0
    assert w["lnlp"] > w["mte"] > 0  # 3 > 1.5 in the generating model
    for o in out[:20]:
        assert o.confidence == pytest.approx(sum(w[k] * v for k, v in o.normalized.items()))
    # it tells right steps from wrong ones better than equal weights (which count clips)
    from sklearn.metrics import roc_auc_score

    equal_cal = ConfidenceCalibrator(estimators=("lnlp", "mte", "clips")).fit(raw)
    equal = equal_cal.transform(raw)
    assert roc_auc_score(y, [o.confidence for o in out]) > roc_auc_score(
        y, [o.confidence for o in equal]) + 0.05
    # the record of what each confidence tells, against scikit-learn on the same columns
    fused = np.array([o.confidence for o in out])
    assert cal.discrimination_["fused"] == pytest.approx(roc_auc_score(y, fused), abs=1e-6)
    assert cal.discrimination_["clips"] == pytest.approx(roc_auc_score(y, x[:, 2]), abs=1e-6)
    assert cal.discrimination_["clips"] < 0.4 < 0.6 < cal.discrimination_["lnlp"]
    assert equal_cal.discrimination_ is None  # fitted without labels: nothing to say
    loaded = ConfidenceCalibrator.load(cal.save(tmp_path / "fitted.json"))
    assert loaded.fusion.weights == w and loaded.needs_labels
    assert loaded.discrimination_ == cal.discrimination_
    np.testing.assert_allclose([o.confidence for o in loaded.transform(raw)],
                               [o.confidence for o in out])
    # a step without one estimator is fused over the others, weights renormalised
    alone = cal.transform([{"lnlp": -0.5, "mte": -0.5}])[0]
    assert alone.confidence == pytest.approx(
        (w["lnlp"] * alone.normalized["lnlp"] + w["mte"] * alone.normalized["mte"])
        / (w["lnlp"] + w["mte"]))


def test_fitted_fusion_refuses_what_it_cannot_fit():
    x, y = _fitted_fusion_data(60)
    raw = [{"lnlp": -a, "mte": -b, "clips": c} for a, b, c in x]
    cal = ConfidenceCalibrator(estimators=("lnlp", "mte", "clips"), fusion=Fusion("fitted"))
    assert cal.needs_labels and not ConfidenceCalibrator().needs_labels
    with pytest.raises(ValueError, match="fusion 'fitted' needs the reference steps' correctness"):
        cal.clone().fit(raw)
    with pytest.raises(ValueError, match="both right and wrong"):
        cal.clone().fit(raw, [1.0] * len(raw))
    # only a step that goes against correctness: every weight 0, named
    with pytest.raises(ValueError, match="every estimator got weight 0"):
        ConfidenceCalibrator(estimators=("clips",), fusion=Fusion("fitted")).fit(
            [{"clips": float(v)} for v in y], (1 - y).tolist())
    with pytest.raises(RuntimeError, match="not fitted"):
        Fusion("fitted")({"lnlp": 0.5})
    fitted = cal.clone().fit(raw, y.tolist())
    assert fitted.is_fitted
    with pytest.raises(ValueError, match="no estimator of weight > 0"):
        fitted.transform([{"clips": 0.5}])
