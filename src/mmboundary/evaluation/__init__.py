"""Evaluation (METHOD.md section 7): metrics, dataset evaluation with the one rule set, baselines,
reports. Cheap to import; models load inside the functions that need them.

>>> from mmboundary.evaluation import expected_calibration_error
>>> round(expected_calibration_error([0.15, 0.25, 0.95, 1.0], [0, 1, 1, 1], n_bins=2), 4)
0.1625
"""

from mmboundary.evaluation.baselines import (
    constant_confidence,
    internal_confidence,
    multisample,
    self_consistency,
    token_probability,
    verbal_confidence,
)
from mmboundary.evaluation.evaluate import (
    EvalConfig,
    EvalResult,
    evaluate_predictions,
    parse_responses,
)
from mmboundary.evaluation.intervals import bootstrap_interval, mean_sd
from mmboundary.evaluation.metrics import (
    area_under_risk_coverage,
    auroc,
    brier_score,
    chain_scores,
    expected_calibration_error,
    multi_granularity_ece,
    reliability_diagram_data,
)
from mmboundary.evaluation.report import write_report
from mmboundary.evaluation.summary import METRICS, summarize

__all__ = ["METRICS", "EvalConfig", "EvalResult", "area_under_risk_coverage", "auroc",
           "bootstrap_interval", "brier_score", "chain_scores", "constant_confidence",
           "evaluate_predictions", "expected_calibration_error", "internal_confidence",
           "mean_sd", "multi_granularity_ece", "multisample", "parse_responses",
           "reliability_diagram_data", "self_consistency", "summarize", "token_probability",
           "verbal_confidence", "write_report"]
