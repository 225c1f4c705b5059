"""Calibration metrics: hand-worked values, edge cases, and agreement with torchmetrics / sklearn."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.evaluation import metrics as M


def test_doctests() -> None:
    assert doctest.testmod(M).failed == 0


def test_ece_hand_worked() -> None:
    # 10 bins: 0.85 and 0.82 share [0.8, 0.9): conf 0.835, acc 0.5, gap 0.335, weight 2/4;
    # 0.3 -> [0.3, 0.4): gap 0.3 (wrong), 0.05 -> [0, 0.1): gap 0.95 (correct).
    conf, correct = [0.85, 0.82, 0.3, 0.05], [1, 0, 0, 1]
    expected = 0.5 * 0.335 + 0.25 * 0.3 + 0.25 * 0.95
    assert M.expected_calibration_error(conf, correct) == pytest.approx(expected, abs=1e-12)


def test_ece_edge_cases() -> None:
    assert M.expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0  # confidences exactly 1
    assert M.expected_calibration_error([0.0, 0.0], [0, 0]) == 0.0  # exactly 0
    assert M.expected_calibration_error([0.7, 0.9], [1, 1]) == pytest.approx(0.2)  # all correct
    assert M.expected_calibration_error([0.2, 0.8], [1, 1], n_bins=1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty input"):
        M.expected_calibration_error([], [])
    with pytest.raises(ValueError, match=r"confidences\[2\] is NaN"):
        M.expected_calibration_error([0.1, 0.2, float("nan")], [0, 1, 1])
    with pytest.raises(ValueError, match=r"confidences\[0\] = 1.5"):
        M.brier_score([1.5], [1])
    with pytest.raises(ValueError, match=r"correct\[1\] = 0.5"):
        M.auroc([0.1, 0.2], [1, 0.5])
    with pytest.raises(ValueError, match="3 values but correct has 2"):
        M.expected_calibration_error([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        M.expected_calibration_error([0.1], [1], n_bins=0)


def test_level_values_fall_in_their_own_decimal_bin() -> None:
    bins = M.reliability_diagram_data([0.1, 0.3, 0.5, 0.7, 0.9], [0, 0, 1, 1, 1])
    assert bins.lower == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert bins.count == [1, 1, 1, 1, 1]


def test_quantile_binning() -> None:
    conf = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    correct = [0, 0, 1, 0, 1, 1, 0, 1]
    bins = M.reliability_diagram_data(conf, correct, n_bins=2, binning="quantile")
    assert bins.count == [4, 4]
    assert bins.confidence == pytest.approx([0.25, 0.75])
    assert bins.accuracy == pytest.approx([0.25, 0.75])
    assert M.expected_calibration_error(conf, correct, n_bins=2, binning="quantile") == pytest.approx(0.0)


def test_mece_pools_steps_of_all_samples() -> None:
    value = M.multi_granularity_ece([[0.9, 0.1], [0.9]], [[1, 0], [0]])
    assert value == pytest.approx(M.expected_calibration_error([0.9, 0.1, 0.9], [1, 0, 0]))
    assert value == pytest.approx(0.3)
    with pytest.raises(ValueError, match="sample 1: 2 step confidences but 1"):
        M.multi_granularity_ece([[0.9], [0.2, 0.3]], [[1], [0]])


def test_brier_and_auroc_values() -> None:
    assert M.brier_score([1.0, 0.0], [1, 0]) == 0.0
    assert M.brier_score([0.5, 0.5], [1, 0]) == pytest.approx(0.25)
    assert M.auroc([0.9, 0.1], [1, 0]) == 1.0
    assert M.auroc([0.1, 0.9], [1, 0]) == 0.0
    assert M.auroc([0.5, 0.5], [1, 0]) == 0.5
    assert M.auroc([0.2, 0.3], [0, 0]) is None


_pairs = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
    )
)


def _off_boundary(conf: list[float], n_bins: int) -> list[float]:
    """torch.linspace's float edges differ from k/n by one ulp at a few decimals; nudge values
    sitting exactly on an interior edge so both conventions see the same bin."""
    edges = np.arange(1, n_bins) / n_bins
    return [c + 1e-9 if np.any(np.abs(edges - c) < 1e-12) else c for c in conf]


@settings(max_examples=60, deadline=None)
@given(_pairs, st.integers(min_value=1, max_value=15))
def test_ece_matches_torchmetrics(data: tuple[list[float], list[int]], n_bins: int) -> None:
    import torch
    from torchmetrics.classification import BinaryCalibrationError

    conf, correct = data
    conf = _off_boundary(conf, n_bins)
    metric = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    expected = float(metric(torch.tensor(conf, dtype=torch.float64), torch.tensor(correct)))
    assert M.expected_calibration_error(conf, correct, n_bins=n_bins) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(_pairs)
def test_auroc_matches_sklearn(data: tuple[list[float], list[int]]) -> None:
    from sklearn.metrics import roc_auc_score

    conf, correct = data
    value = M.auroc(conf, correct)
    if len(set(correct)) < 2:
        assert value is None
    else:
        assert value == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(_pairs)
def test_brier_matches_sklearn(data: tuple[list[float], list[int]]) -> None:
    from sklearn.metrics import brier_score_loss

    conf, correct = data
    assert M.brier_score(conf, correct) == pytest.approx(
        brier_score_loss(correct, conf, pos_label=1) if len(set(correct)) > 1 or correct[0] == 1
        else float(np.mean(np.square(conf))), abs=1e-12)


# --- AURC, coverage and intervals (issue #11) ----------------------------------------------------
from mmboundary.evaluation import intervals as I  # noqa: E402
from mmboundary.evaluation.metrics import area_under_risk_coverage  # noqa: E402


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.floats(0, 1))
def test_aurc_of_a_constant_is_the_error_rate(correct: list[bool], value: float) -> None:
    errors = 1.0 - sum(correct) / len(correct)
    assert area_under_risk_coverage([value] * len(correct), correct) == pytest.approx(errors)


def test_aurc_hand_worked_and_perfect_ranking_floor() -> None:
    # sorted by confidence: correct, wrong, correct, wrong -> risks 0, 1/2, 1/3, 2/4
    assert area_under_risk_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == \
        pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    # a perfect ranking of 2 right, 2 wrong: risks 0, 0, 1/3, 1/2
    assert area_under_risk_coverage([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == \
        pytest.approx((1 / 3 + 1 / 2) / 4)


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 0.1, size=300)
    ci = I.bootstrap_interval(len(x), lambda ix: float(np.mean(x[ix])), n_boot=400, seed=3)
    assert ci is not None and ci[0] < float(np.mean(x)) < ci[1]
    # the normal-theory 95% half-width is 1.96 * 0.1 / sqrt(300) = 0.0113
    assert (ci[1] - ci[0]) / 2 == pytest.approx(1.96 * x.std() / np.sqrt(300), rel=0.2)
    assert ci == I.bootstrap_interval(len(x), lambda ix: float(np.mean(x[ix])), n_boot=400, seed=3)
    assert I.bootstrap_interval(10, lambda ix: None, n_boot=20) is None
    assert I.mean_sd([0.1, 0.3, None]) == (pytest.approx(0.2), pytest.approx(0.1414, abs=1e-4), 2)


def test_level_agreement_hand_worked() -> None:
    from mmboundary.evaluation import diagnostics

    assert doctest.testmod(diagnostics).failed == 0
    # stated 3,3,4,2 vs internal 3,4,4,1: p_o = 2/4; p_e = sum_k p_stated(k) p_internal(k)
    # = (1/4)(0)[2] + (2/4)(1/4)[3] + (1/4)(2/4)[4] = 1/4; kappa = (1/2 - 1/4) / (1 - 1/4) = 1/3
    result = diagnostics.level_agreement([3, 3, 4, 2], [3, 4, 4, 1])
    assert result.kappa == pytest.approx(1 / 3)
    assert result.confusion[2] == [0, 0, 1, 1, 0] and sum(map(sum, result.confusion)) == 4
    assert diagnostics.level_agreement([3, 3], [2, 4]).kappa is None
    with pytest.raises(ValueError, match="levels must be 1..5"):
        diagnostics.level_agreement([0], [1])
