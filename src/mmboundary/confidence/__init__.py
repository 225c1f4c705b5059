"""Step-level internal confidence (METHOD.md sections 2-3): four estimators, normalisers,
fusion, levels, and the pipeline that scores responses from one model pass.

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
from mmboundary.confidence.fusion import Fusion, LevelCuts, fuse_max, fuse_mean
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

__all__ = [
    "ESTIMATORS", "CLIPScore", "ConfidenceCalibrator", "EstimateConfig", "EstimateSummary",
    "Estimator", "Fusion", "LengthNormalizedPerplexity", "LevelCuts", "MeanTokenEntropy",
    "QuantileNormalizer", "RobustMinMaxNormalizer", "SampleError", "StepConfidence", "StepInput",
    "StepStatistics", "TokenSAR", "apply_calibrator", "calibrator_path_for", "clip_score",
    "compute_statistics", "estimate", "estimate_batch", "estimate_dataset", "estimate_steps",
    "failed", "finalize_output", "fuse_max", "fuse_mean", "get_estimators",
    "length_normalized_perplexity", "mean_token_entropy", "merge_outputs",
    "token_sar", "tokensar_similarities",
]
