"""Text: sentence steps with spans and token alignment; confidence statements (bank, insertion,
parsing) and answer matching.

- :mod:`mmboundary.text.steps`: ``split_steps``, ``align_steps_to_tokens``;
- :mod:`mmboundary.text.statements`: the statement bank, levels <-> values, insertion;
- :mod:`mmboundary.text.statement_parser`: statement -> confidence (``StatementParser``,
  ``parse_steps``, ``statement_confidence``);
- :mod:`mmboundary.text.matching`: answer correctness (``judge_answer``, ``match_choice``).
"""

from __future__ import annotations

from mmboundary.text.matching import judge_answer, match_choice, normalize_vqa_answer
from mmboundary.text.statement_parser import (
    Detection,
    StatementParser,
    default_parser,
    parse_steps,
    statement_confidence,
)
from mmboundary.text.statements import (
    LEVELS,
    StatementBank,
    default_bank,
    insert_confidence,
    insert_numeric,
    insert_statement,
    level_to_value,
    normalize_statement,
    value_to_level,
)
from mmboundary.text.steps import align_steps_to_tokens, split_steps

__all__ = ["LEVELS", "normalize_statement", "Detection", "StatementBank", "StatementParser", "align_steps_to_tokens",
           "default_bank", "default_parser", "insert_confidence", "insert_numeric",
           "insert_statement", "judge_answer", "level_to_value", "match_choice",
           "normalize_vqa_answer", "parse_steps", "split_steps", "statement_confidence",
           "value_to_level"]
