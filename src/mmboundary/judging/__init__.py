"""Step judges and the one rule set (answer, alignment, step correctness) that evaluation, the RL
rewards and the baselines share. See :mod:`mmboundary.judging.rules` and docs/JUDGES.md."""

from mmboundary.judging.base import (
    JudgeItem,
    StepJudge,
    StepVerdict,
    judge_names,
    make_judge,
    register_judge,
)
from mmboundary.judging.rules import (
    DEFAULT_JUDGE,
    MISSING_STATEMENT_CONFIDENCE,
    UNALIGNED_STEP_CORRECTNESS,
    ChainJudgement,
    RuleConfig,
    StepJudgement,
    StepRules,
    align,
    final_answer,
    has_gold,
)
from mmboundary.judging.simple import DEFAULT_STEP_TAU, ExactJudge, SimilarityJudge, normalize_step

__all__ = ["DEFAULT_JUDGE", "DEFAULT_STEP_TAU", "MISSING_STATEMENT_CONFIDENCE",
           "UNALIGNED_STEP_CORRECTNESS", "ChainJudgement", "ExactJudge", "JudgeItem",
           "RuleConfig", "SimilarityJudge", "StepJudge", "StepJudgement", "StepRules",
           "StepVerdict", "align", "final_answer", "has_gold", "judge_names", "make_judge",
           "normalize_step", "register_judge"]
