"""Credit per step for the confidence statements in GRPO (ours; ``RLConfig.credit = "step"``).

GRPO gives every token of a completion one advantage: the group-normalised total reward. The
statements then get what R_EC and R_CS add to the whole completion's total, a small share next to
what the content gets from R_KA (README, "RL strength"), and an R_EC weighted up enough to matter
pays the policy to make steps stated at level 1 wrong (``training.rewards.correctness_incentive``).
With ``credit = "step"`` the two are paid apart:

- content tokens keep GRPO's advantage, computed from alpha R_KA (+ format_weight F) only: R_EC
  and R_CS are left out of the completion's reward (both are still computed and logged);
- the tokens of step t's statement (``training.distill.statement_span``) get z_t, the step's own
  score ``s_t = -beta (e_t - a_t)^2 - gamma |e_t - i_t|`` (the terms R_EC and R_CS average over
  steps) standardised over the scored statements of the local batch,
  ``z_t = (s_t - mean) / (std + 1e-4)``.

A statement is then paid for saying how likely its own step is right (and for agreeing with the
internal level), the content for being right. A step without a statement is scored as R_EC scores
it (e_t = 0.5, ``judging.rules.MISSING_STATEMENT_CONFIDENCE``) and the score goes to its final
punctuation, the token that ended the step instead of a statement: without that, a statement
scored below the batch mean is pushed down as a whole, its shared ", but I" included, and nothing
pushes back (measured at lr 2e-4: the statements vanished, step coverage .23 after 60 steps).
No credit where a_t is unknown; the gamma term is left out where i_t is unknown (NaN). The
paper's PPO has a critic that could learn such credit per token; GRPO here has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmboundary.training.distill import statement_span, words_end

if TYPE_CHECKING:
    from mmboundary.training.step_analysis import StepAnalysis, StepAnalyzer

CREDITS = ("completion", "step")
MIN_TRL = "1.16"


def step_scores(analysis: StepAnalysis, beta: float, gamma: float,
                cs_form: str = "abs") -> list[float | None]:
    """Per step, ``-beta (e_t - a_t)^2 - gamma |e_t - i_t|`` (``cs_form`` "squared": ``gamma (e_t -
    i_t)^2``, ``rewards.cs_distance``; e_t = 0.5 for a step without a statement, as in R_EC); all
    ``None`` when the completion's step correctness is unknown."""
    from mmboundary.training.rewards import cs_distance

    steps = len(analysis.steps)
    if analysis.step_correct is None:
        return [None] * steps
    internal = analysis.internal if analysis.internal else [math.nan] * steps
    out: list[float | None] = []
    for e, a, i in zip(analysis.expressed, analysis.step_correct, internal, strict=True):
        score = -beta * (e - a) ** 2
        if gamma and math.isfinite(i):
            score -= gamma * cs_distance(e, i, cs_form)
        out.append(score)
    return out


def credit_span(text: str, step: Any) -> tuple[int, int] | None:
    """Where a step's score goes: its statement (``statement_span``), or for a step without one
    its final punctuation (``None`` if it has none)."""
    if step.statement is not None:
        return statement_span(text, step)
    stop = words_end(text, step)
    return (stop, step.end) if step.end > stop else None


def standardise(scores: Sequence[Sequence[float | None]]) -> list[list[float | None]]:
    """``(s - mean) / (std + 1e-4)`` over every non-None score of the batch; all 0 when fewer
    than two scores (nothing to compare)."""
    flat = [s for row in scores for s in row if s is not None]
    if len(flat) < 2:
        return [[None if s is None else 0.0 for s in row] for row in scores]
    mean, std = float(np.mean(flat)), float(np.std(flat))
    return [[None if s is None else (s - mean) / (std + 1e-4) for s in row] for row in scores]


def token_advantages(advantages: Any, completion_ids: Any, completion_mask: Any,
                     texts: Sequence[str], analyses: Sequence[StepAnalysis], tokenizer: Any,
                     beta: float, gamma: float, cs_form: str = "abs") -> tuple[Any, int]:
    """``[B, T]`` advantages: each row's completion advantage, with the tokens overlapping a
    scored step's :func:`credit_span` set to that step's z_t. Also returns how many steps got
    credit.

    ``texts[b]`` is completion ``b`` decoded (the text ``analyses[b]`` parsed)."""
    import torch

    from mmboundary.models.token_stats import decode_offsets

    out = advantages.reshape(-1, 1).expand_as(completion_ids).clone().float()
    z = standardise([step_scores(a, beta, gamma, cs_form) for a in analyses])
    credited = 0
    for b, (text, analysis, row) in enumerate(zip(texts, analyses, z, strict=True)):
        positions = completion_mask[b].nonzero().flatten().tolist()
        spans = [(credit_span(text, step), value)
                 for step, value in zip(analysis.steps, row, strict=True) if value is not None]
        spans = [(span, value) for span, value in spans if span is not None]
        if not spans:
            continue
        offsets = decode_offsets(tokenizer, completion_ids[b, positions].tolist(), text)
        for (start, end), value in spans:
            hit = [p for p, (s, e) in zip(positions, offsets, strict=True)
                   if e > s and s < end and start < e]
            if hit:
                out[b, torch.tensor(hit)] = float(value)
                credited += 1
    return out, credited


def step_credit_trainer_class() -> type:
    """TRL's ``GRPOTrainer`` with per-step statement credit (module docstring). Give it the
    reward weights with beta and gamma set to 0 (the completion's advantage is alpha R_KA + F)
    and pass the analyzer and the real beta / gamma to the constructor.

    Needs TRL >= ``MIN_TRL`` (the version tested): its loss takes advantages ``[B, T]``; an older
    one would broadcast them wrongly, so it is refused."""
    import trl
    from packaging.version import Version
    from trl import GRPOTrainer

    if Version(trl.__version__) < Version(MIN_TRL):
        raise RuntimeError(f"RLConfig.credit='step' needs trl >= {MIN_TRL} (per-token advantages "
                           f"in GRPOTrainer's loss); installed: {trl.__version__}")

    class StepCreditGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, analyzer: StepAnalyzer, beta: float, gamma: float,
                     cs_form: str = "abs", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._credit = (analyzer, beta, gamma, cs_form)

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            analyzer, beta, gamma, cs_form = self._credit
            ids, mask = output["completion_ids"], output["completion_mask"]
            texts = self.processing_class.batch_decode(ids, skip_special_tokens=True)
            analyses = analyzer.analyze(texts, [x["sample"] for x in inputs],
                                        image=[x.get("image") for x in inputs],
                                        trainer_state=self.state)
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            output["advantages"], credited = token_advantages(
                output["advantages"], ids, mask, texts, analyses, tokenizer, beta, gamma,
                cs_form)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["mmb/credited_steps"].append(float(credited))
            return output

    return StepCreditGRPOTrainer
