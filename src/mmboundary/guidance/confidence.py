"""The confidence of one freshly generated step, as guided decoding reads it.

Two sources, one contract: ``source.judge(samples, images, steps) -> list[StepJudgement]``, one
batched call for every candidate step of every question of a decoding round.

- ``StatedConfidence``: the step's own confidence statement (a model trained with MMBoundary says
  "..., but I can't be entirely sure."), read back with the one ``StatementParser``
  (``text.statements``): its level and value (2k - 1) / 10 (numeric mode: the number).
- ``InternalConfidence``: for any model, statements or not: the one ``InternalConfidenceScorer``
  (``confidence.scorer``) scores the step's content tokens from the generation's own raw-logit
  statistics (no extra model pass for LNLP and MTE; TokenSAR / CLIPS call the similarity model
  / CLIP) and its fitted calibrator gives the fused C and the level.

A step whose confidence is unknown (it states nothing, or nothing of it can be scored) counts as
level ``missing_level`` **(ours: default 3, i.e. 0.5, the value R_EC gives a step without a
statement, METHOD.md section 6)**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mmboundary.data.schema import Response, Sample, TokenStats
from mmboundary.guidance.stepwise import Chunk, decode
from mmboundary.text.statements import LEVELS, level_to_value, value_to_level

DEFAULT_MISSING_LEVEL = 3


@dataclass(frozen=True)
class StepJudgement:
    """A step's confidence: ``level`` 1..5 and ``value`` in [0, 1] (what candidates are ranked
    by); ``known`` False when the level is the ``missing_level`` stand-in."""

    level: int
    value: float
    known: bool = True


def _missing(level: int) -> StepJudgement:
    return StepJudgement(level, level_to_value(level), known=False)


def _check_missing(level: int, owner: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"{owner}.missing_level: expected one of {LEVELS}, got {level!r}")


class StepConfidenceSource(Protocol):
    """What guided decoding asks: the confidence of each candidate step (text + statistics)."""

    def judge(self, samples: Sequence[Sample], images: Sequence[Any],
              steps: Sequence[Chunk]) -> list[StepJudgement]: ...


class StatedConfidence:
    """The confidence a step states: level of its trailing statement (``StatementParser``).

    Args:
        tokenizer: decodes the step's token ids into its text.
        parser: the statement parser (None = ``text.statement_parser.default_parser()``).
        missing_level: the level of a step that states nothing (module docstring).
    """

    def __init__(self, tokenizer: Any, parser: Any = None, *,
                 missing_level: int = DEFAULT_MISSING_LEVEL) -> None:
        _check_missing(missing_level, "StatedConfidence")
        self.tokenizer, self.parser, self.missing_level = tokenizer, parser, missing_level

    def judge(self, samples: Sequence[Sample], images: Sequence[Any],
              steps: Sequence[Chunk]) -> list[StepJudgement]:
        """One ``StepJudgement`` per step text; one batched ``detect`` call."""
        if self.parser is None:
            from mmboundary.text.statement_parser import default_parser

            self.parser = default_parser()
        texts = [decode(self.tokenizer, step.ids).strip() for step in steps]
        out = []
        for text, found in zip(texts, self.parser.detect(texts), strict=True):
            if not text or found is None:
                out.append(_missing(self.missing_level))
                continue
            level = found.level if found.level is not None else value_to_level(found.value)
            out.append(StepJudgement(level, float(found.value)))
        return out


class InternalConfidence:
    """The model's internal confidence of a step (``InternalConfidenceScorer`` + its fitted
    calibrator), from the step's own generation statistics.

    The step is scored as a response of its own: its tokens' log-probs and entropies already
    hold the context (image, question, earlier steps), and every estimator reads only the step's
    content tokens (+ the image, + the question for TokenSAR's ``include_question``), so the
    scores equal those of the step inside the whole response. Should the step text split into
    several sentences, the least confident counts **(ours)**; each is a plain step (the
    calibrator's answer-step rule needs the whole chain, which is not written yet). Ranking
    value: the scorer's ``scale`` ("level": (2k - 1) / 10; "raw": the fused C).

    Args:
        scorer: an ``InternalConfidenceScorer`` of the generating model, calibrator fitted.
        missing_level: the level of a step that cannot be scored (module docstring).
    """

    def __init__(self, scorer: Any, *, missing_level: int = DEFAULT_MISSING_LEVEL) -> None:
        _check_missing(missing_level, "InternalConfidence")
        if not scorer.calibrator.is_fitted:
            raise ValueError("InternalConfidence.scorer.calibrator is not fitted: fit it on the "
                             "model's own steps (scorer.fit_calibrator) or load a fitted one")
        self.scorer, self.missing_level = scorer, missing_level

    def _response(self, sample: Sample, step: Chunk) -> Response | None:
        from mmboundary.models.token_stats import decode_offsets

        tokenizer = self.scorer.vlm.tokenizer
        text = decode(tokenizer, step.ids)
        if not text.strip():
            return None
        stats = TokenStats(token_ids=list(step.ids), logprobs=list(step.logprobs),
                           entropies=list(step.entropies),
                           offsets=decode_offsets(tokenizer, list(step.ids), text))
        return Response(sample_id=sample.id, text=text, token_stats=stats)

    def judge(self, samples: Sequence[Sample], images: Sequence[Any],
              steps: Sequence[Chunk]) -> list[StepJudgement]:
        """One ``StepJudgement`` per step; one ``scorer.score`` call for all of them."""
        from mmboundary.confidence.outputs import failed
        from mmboundary.confidence.scorer import internal_value

        responses = [self._response(s, c) for s, c in zip(samples, steps, strict=True)]
        todo = [i for i, r in enumerate(responses) if r is not None]
        scored = self.scorer.score([samples[i] for i in todo], [responses[i] for i in todo],
                                   [images[i] for i in todo], whole=False) if todo else []
        out = [_missing(self.missing_level)] * len(steps)
        for i, response in zip(todo, scored, strict=True):
            levelled = [] if failed(response) else [s for s in response.steps
                                                     if s.level is not None]
            if levelled:
                low = min(levelled, key=lambda s: (s.level, s.confidence or 0.0))
                value = internal_value(low, self.scorer.scale)
                if math.isfinite(value):
                    out[i] = StepJudgement(int(low.level), value)
        return out
