"""Step-level internal confidence (METHOD.md sections 2-3): four estimators, normalisers,
fusion, levels, the pipeline that scores responses from one model pass, and the one
``InternalConfidenceScorer`` that RL, the baselines and the demo share.

Cheap to import (numpy only); models load inside the functions that need them.
"""

from mmboundary.confidence.estimators import (
    ESTIMATORS,
    CLIPScore,
    Estimator,
    LengthNormalizedPerplexity,
    MeanTokenEntropy,
    StepInput,
    StepStatistics,
    TokenSAR,
    clip_score,
    compute_statistics,
    estimate,
    get_estimators,
    length_normalized_perplexity,
    mean_token_entropy,
    token_sar,
    tokensar_similarities,
)
from mmboundary.confidence.fusion import (
    LEVEL_RULES,
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
    StepConfidence,
)
from mmboundary.confidence.outputs import (
    EstimateSummary,
    apply_calibrator,
    calibrator_path_for,
    failed,
    finalize_output,
    merge_outputs,
)
from mmboundary.confidence.pipeline import (
    EstimateConfig,
    SampleError,
    estimate_batch,
    estimate_dataset,
    estimate_steps,
)
from mmboundary.confidence.scorer import InternalConfidenceScorer, internal_value

__all__ = [
    "ESTIMATORS", "LEVEL_RULES", "CLIPScore", "ConfidenceCalibrator", "EmptyLevelWarning",
    "EstimateConfig", "EstimateSummary", "Estimator", "Fusion", "InternalConfidenceScorer",
    "LengthNormalizedPerplexity", "LevelCuts", "MeanTokenEntropy",
    "QuantileNormalizer", "RobustMinMaxNormalizer", "SampleError", "StepConfidence", "StepInput",
    "StepStatistics", "TokenSAR", "apply_calibrator", "calibrator_path_for", "clip_score",
    "compute_statistics", "estimate", "estimate_batch", "estimate_dataset", "estimate_steps",
    "failed", "finalize_output", "fuse_max", "fuse_mean", "get_estimators",
    "internal_value", "length_normalized_perplexity", "mean_token_entropy", "merge_outputs",
    "normal_cdf",
    "token_sar", "tokensar_similarities",
]
