"""Confidence-guided decoding (issue #17; docs/GUIDED.md): step-wise decoding that resamples or
abstains on a low-confidence step, judged by its stated or its internal confidence.

Sits above ``confidence`` and ``text`` (it needs the statement parser and the internal scorer);
cheap to import: torch and the models load inside the functions that need them.
"""

from mmboundary.guidance.confidence import (
    DEFAULT_MISSING_LEVEL,
    InternalConfidence,
    StatedConfidence,
    StepConfidenceSource,
    StepJudgement,
)
from mmboundary.guidance.guided import (
    ABSTAIN_TEXT,
    GUIDES,
    GuideConfig,
    generate_guided_responses,
    guided_generate,
)
from mmboundary.guidance.stepwise import Chunk, completed_step_end, continue_generation, cut_step

__all__ = [
    "ABSTAIN_TEXT", "DEFAULT_MISSING_LEVEL", "GUIDES", "Chunk", "GuideConfig",
    "InternalConfidence", "StatedConfidence", "StepConfidenceSource", "StepJudgement",
    "completed_step_end", "continue_generation", "cut_step", "generate_guided_responses",
    "guided_generate",
]
