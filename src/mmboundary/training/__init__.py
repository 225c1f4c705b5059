"""Training (METHOD.md sections 5-6): the warm-up SFT data and trainer, the stage-2 rewards and
GRPO, the LLaMA-Factory export. Cheap to import; TRL, peft and datasets load inside the functions.

>>> from mmboundary.training import expected_calibration
>>> expected_calibration([0.9, 0.3], [1, 0])  # R_EC = 1 - mean (e_t - a_t)^2
0.95
"""

from mmboundary.training.config import SFTConfig
from mmboundary.training.llamafactory import export_llamafactory
from mmboundary.training.rewards import (
    confidence_self_calibration,
    confidence_self_calibration_reward,
    expected_calibration,
    expected_calibration_reward,
    format_reward,
    format_score,
    knowledge_accuracy,
    knowledge_accuracy_reward,
)
from mmboundary.training.rl import train_rl
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.sft import train_sft
from mmboundary.training.sft_data import build_sft
from mmboundary.training.step_analysis import StepAnalysis, StepAnalyzer

__all__ = ["RLConfig", "SFTConfig", "StepAnalysis", "StepAnalyzer", "build_sft",
           "confidence_self_calibration", "confidence_self_calibration_reward",
           "expected_calibration", "expected_calibration_reward", "export_llamafactory",
           "format_reward", "format_score", "knowledge_accuracy", "knowledge_accuracy_reward",
           "train_rl", "train_sft"]
