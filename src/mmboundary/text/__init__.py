"""Text: sentence steps with spans and token alignment; confidence statements.

``split_steps`` and ``align_steps_to_tokens`` live in :mod:`mmboundary.text.steps`; the statement
bank, insertion and parsing (``parse_steps``, ``statement_confidence``) in
:mod:`mmboundary.text.statements` (imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from mmboundary.text.steps import align_steps_to_tokens, split_steps

__all__ = ["align_steps_to_tokens", "split_steps", "parse_steps", "statement_confidence",
           "insert_statement"]

_LAZY = {"parse_steps", "statement_confidence", "insert_statement"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("mmboundary.text.statements"), name)
    raise AttributeError(f"module 'mmboundary.text' has no attribute {name!r}")
