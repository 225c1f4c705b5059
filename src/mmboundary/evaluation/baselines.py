"""Confidence baselines (METHOD.md section 7): how each turns responses into step confidences.

Every baseline returns ``Response`` objects whose steps carry ``expressed_confidence`` (``None``
where the method produced nothing for a step), so one evaluation scores them all. This module
holds the scoring; ``evaluation.baseline_runs`` generates the responses each one needs from any
VLM (``mmboundary baselines`` and the demo both call it).

- ``constant_confidence``: every step gets the same number; ``fit_constant`` gives the usual
  value, the model's answer accuracy on training questions.
- ``token_probability``: a step's confidence = exp(mean log p of its content tokens); the answer
  step's value is then the model's own answer-token probability.
- ``internal_confidence``: the fused internal confidence C of the four estimators (the signal the
  warm-up teaches the model to verbalise), read off the model's own statistics, not verbalised.
- DPV / DPS: prompt the vanilla model for a numeric (``DPV_INSTRUCTION``) or verbal
  (``DPS_INSTRUCTION``) confidence after each step; parse with the statement parser.
- ``self_consistency`` (SC): k samples; the answer step's confidence = share of samples giving the
  same answer; any other step's = share of samples containing a step that ``agree``s with it.
- ``multisample``: k samples with verbal confidences; each step of the majority representative
  gets the mean stated confidence of the agreeing steps in the samples that give the majority
  answer.

Step agreement in SC and Multisample is a callable ``agree(step_a, step_b) -> bool`` over step
texts (``StepAgreement``); the rule set gives it (``judging.rules.StepRules.agreement``: exact
match on templated data, else the step judge), so SC agrees with evaluation on what "the same
step" means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mmboundary.data.schema import Response, Sample, Step, extract_answer
from mmboundary.text.steps import align_steps_to_tokens, split_steps

DPV_INSTRUCTION = (
    "Answer the question step by step, one short sentence per step. After every sentence write "
    "your confidence in it as a number between 0 and 1, like (confidence 0.7). Finish with "
    "\"So, the answer is X.\"")
DPS_INSTRUCTION = (
    "Answer the question step by step, one short sentence per step. End every sentence with how "
    "sure you are of it in words, for example \", but I can't be entirely sure\" or \", with total "
    "certainty\". Finish with \"So, the answer is X.\"")

#: ``agree(step_a, step_b)``: do two step texts state the same thing? (SC, Multisample)
StepAgreement = Callable[[str, str], bool]


def response_answer(steps: Sequence[Step]) -> str | None:
    """The answer stated by the last step that states one ("So, the answer is X")."""
    for step in reversed(steps):
        answer = extract_answer(step.content)
        if answer is not None:
            return answer
    return None


def plain_steps(response: Response) -> Response:
    """The response split into sentence steps (no statement parsing), token spans aligned."""
    steps = split_steps(response.text)
    if response.token_stats is not None:
        align_steps_to_tokens(steps, response.token_stats.offsets)
    return response.model_copy(update={"steps": steps})


def fit_constant(samples: Sequence[Sample], responses: Sequence[Response],
                 similarity: Any = None) -> float:
    """The constant baseline's value: the mean answer correctness (``text.matching.judge_answer``)
    of ``responses`` (the model's answers to training questions) on ``samples``. Responses that
    failed (``meta["error"]``) are left out; a response whose sample is missing is an error."""
    from mmboundary.text.matching import judge_answer

    by_id = {s.id: s for s in samples}
    scores = []
    for i, response in enumerate(responses):
        if "error" in response.meta:
            continue
        if response.sample_id not in by_id:
            raise ValueError(f"fit_constant: response {i} (sample_id {response.sample_id!r}) has "
                             "no sample in the data")
        answer = response_answer(plain_steps(response).steps)
        scores.append(judge_answer(by_id[response.sample_id], answer, similarity).score)
    if not scores:
        raise ValueError("fit_constant: no scorable response (all failed or none given)")
    return sum(scores) / len(scores)


def constant_confidence(responses: Sequence[Response], value: float) -> list[Response]:
    """Every step of every response gets ``value`` (a calibration floor every paper should show)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"constant confidence must be in [0, 1], got {value}")
    out = []
    for response in responses:
        r = plain_steps(response)
        for step in r.steps:
            step.expressed_confidence = value
        out.append(r)
    return out


def token_probability(responses: Sequence[Response]) -> list[Response]:
    """Step confidence = exp((1/L) sum_l log p_l) over the step's tokens (needs ``token_stats``)."""
    out = []
    for response in responses:
        if "error" in response.meta:  # a failed generation: no text, no steps, kept as it is
            out.append(response)
            continue
        if response.token_stats is None:
            raise ValueError(f"response {response.sample_id}: token_probability needs the "
                             "per-token statistics of its generation (token_stats is missing)")
        r = plain_steps(response)
        logprobs = r.token_stats.logprobs  # type: ignore[union-attr]
        for step in r.steps:
            span = logprobs[step.token_start:step.token_end]
            step.expressed_confidence = math.exp(sum(span) / len(span)) if span else None
        out.append(r)
    return out


def internal_confidence(vlm: Any, samples: Sequence[Sample], responses: Sequence[Response], *,
                        calibrator: Any, similarity: Any, clip: Any, image_loader: Any = None,
                        config: Any = None, scale: str = "level") -> list[Response]:
    """Step confidence = the model's internal confidence, not verbalised: exactly the i_t that
    R_CS compares statements with (``confidence.InternalConfidenceScorer``, same model, same
    calibrator, same ``scale``).

    ``scale="level"`` (default): the level value (2k - 1) / 10 of the fused C, what a perfectly
    self-calibrated model would state; ``"raw"``: the fused C itself. Each step also keeps its
    ``confidence`` (C) and ``level``. ``config`` (an ``EstimateConfig``) may set
    ``parse_statements`` (default off: vanilla responses carry no statements), ``instruction``,
    ``include_question`` and ``batch_size``; the estimators are the calibrator's. A response that
    cannot be scored keeps ``meta["error"]`` and no step confidences.
    """
    from mmboundary.confidence import InternalConfidenceScorer

    options: dict[str, Any] = {"parse_statements": False}
    if config is not None:
        options = {"parse_statements": config.parse_statements,
                   "instruction": config.instruction,
                   "include_question": config.include_question, "batch_size": config.batch_size}
    scorer = InternalConfidenceScorer(vlm, calibrator, similarity=similarity, clip=clip,
                                      image_loader=image_loader, scale=scale, **options)
    scored = scorer.score(samples, list(responses))
    for r in scored:
        for step, value in zip(r.steps, scorer.values(r), strict=True):
            step.expressed_confidence = None if math.isnan(value) else value
    return scored


def verbal_confidence(responses: Sequence[Response], parser: Any) -> list[Response]:
    """DPV / DPS: parse each step's stated confidence (``StatementParser``, numeric or statement)."""
    parsed = parser.parse_many([r.text for r in responses])
    return [r.model_copy(update={"steps": steps}) for r, steps in zip(responses, parsed, strict=True)]


def _answer_key(answer: str | None) -> str | None:
    from mmboundary.text.matching import normalize_vqa_answer

    return None if answer is None else normalize_vqa_answer(answer)


def _agreeing_step(step: str, steps: Sequence[Step], agree: StepAgreement) -> Step | None:
    """The first of ``steps`` that agrees with the text ``step`` (None if none does)."""
    return next((other for other in steps if agree(step, other.content)), None)


def self_consistency(responses: Sequence[Response], samples: Sequence[Sequence[Response]],
                     agree: StepAgreement) -> list[Response]:
    """SC over ``samples[i]`` (k sampled responses to the same prompt as ``responses[i]``): the
    answer step gets the share of samples stating the same answer (normalised VQA answers), every
    other step the share of samples holding a step that ``agree``s with it."""
    out = []
    for response, group in zip(responses, samples, strict=True):
        r = plain_steps(response)
        group_steps = [split_steps(g.text) for g in group if "error" not in g.meta]
        key = _answer_key(response_answer(r.steps))
        keys = [_answer_key(response_answer(steps)) for steps in group_steps]
        for step in r.steps:
            if not group_steps:
                step.expressed_confidence = None
            elif extract_answer(step.content) is not None:
                step.expressed_confidence = sum(k == key for k in keys) / len(keys)
            else:
                hits = sum(_agreeing_step(step.content, steps, agree) is not None
                           for steps in group_steps)
                step.expressed_confidence = hits / len(group_steps)
        out.append(r)
    return out


def multisample(samples: Sequence[Sequence[Response]], parser: Any,
                agree: StepAgreement) -> list[Response]:
    """Multisample over k verbal-confidence samples per prompt: the first sample giving the
    majority answer represents the group; each of its steps gets the mean stated confidence of
    the first agreeing step (``agree``) in each sample giving that answer."""
    out = []
    for group in samples:
        parsed = verbal_confidence(group, parser)
        keys = [_answer_key(response_answer(r.steps)) for r in parsed]
        majority = Counter(k for k in keys if k is not None).most_common(1)
        major = majority[0][0] if majority else None
        agreeing = [r for r, k in zip(parsed, keys, strict=True) if k == major]
        rep = agreeing[0] if agreeing else parsed[0]
        for step in rep.steps:
            values = []
            for other in agreeing:
                stated = [s for s in other.steps if s.expressed_confidence is not None]
                match = _agreeing_step(step.content, stated, agree)
                if match is not None:
                    values.append(match.expressed_confidence)
            step.expressed_confidence = sum(values) / len(values) if values else None
        out.append(rep)
    return out
