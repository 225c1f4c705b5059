"""Confidence baselines (METHOD.md section 7), each run on the same VLM backend.

Every baseline returns ``Response`` objects whose steps carry ``expressed_confidence`` (``None``
where the method produced nothing for a step), so one evaluation scores them all:

- ``constant_confidence``: every step gets the same number (e.g. the training accuracy).
- ``token_probability``: a step's confidence = exp(mean log p of its content tokens); the answer
  step's value is then the model's own answer-token probability.
- ``internal_confidence``: the fused internal confidence C of the four estimators (the signal the
  warm-up teaches the model to verbalise), read off the model's own statistics, not verbalised.
- DPV / DPS: prompt the vanilla model for a numeric (``DPV_INSTRUCTION``) or verbal
  (``DPS_INSTRUCTION``) confidence after each step; parse with the statement parser.
- ``self_consistency`` (SC): k samples; the answer step's confidence = share of samples giving the
  same answer; any other step's = share of samples containing an equivalent step (g >= tau).
- ``multisample``: k samples with verbal confidences; each step of the majority representative
  gets the mean stated confidence of the equivalent steps in the samples agreeing with the
  majority answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
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
                        config: Any = None) -> list[Response]:
    """Step confidence = the calibrator's fused internal confidence C (estimators of section 2)."""
    from mmboundary.confidence import EstimateConfig, estimate_batch
    from mmboundary.confidence.outputs import apply_calibrator

    config = config or EstimateConfig(estimators=tuple(calibrator.estimators),
                                      parse_statements=False)
    scored = estimate_batch(vlm, samples, list(responses), similarity=similarity, clip=clip,
                            image_loader=image_loader, config=config)
    ok = [r for r in scored if "error" not in r.meta]
    apply_calibrator(ok, calibrator)
    for r in ok:
        for step in r.steps:
            step.expressed_confidence = step.confidence
    return scored


def verbal_confidence(responses: Sequence[Response], parser: Any) -> list[Response]:
    """DPV / DPS: parse each step's stated confidence (``StatementParser``, numeric or statement)."""
    parsed = parser.parse_many([r.text for r in responses])
    return [r.model_copy(update={"steps": steps}) for r, steps in zip(responses, parsed, strict=True)]


def _answer_key(answer: str | None) -> str | None:
    from mmboundary.text.matching import normalize_vqa_answer

    return None if answer is None else normalize_vqa_answer(answer)


def self_consistency(responses: Sequence[Response], samples: Sequence[Sequence[Response]],
                     similarity: Any, tau: float) -> list[Response]:
    """SC over ``samples[i]`` (k sampled responses to the same prompt as ``responses[i]``)."""
    out = []
    for response, group in zip(responses, samples, strict=True):
        r = plain_steps(response)
        group_steps = [split_steps(g.text) for g in group]
        key = _answer_key(response_answer(r.steps))
        keys = [_answer_key(response_answer(steps)) for steps in group_steps]
        for step in r.steps:
            if extract_answer(step.content) is not None:
                step.expressed_confidence = sum(k == key for k in keys) / len(keys) if keys else None
                continue
            hits = 0
            for steps in group_steps:
                texts = [s.content for s in steps]
                if texts and float(similarity.pairwise([step.content], texts).max()) >= tau:
                    hits += 1
            step.expressed_confidence = hits / len(group_steps) if group_steps else None
        out.append(r)
    return out


def multisample(samples: Sequence[Sequence[Response]], parser: Any, similarity: Any,
                tau: float) -> list[Response]:
    """Multisample over k verbal-confidence samples per prompt (see the module docstring)."""
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
                cands = [s for s in other.steps if s.expressed_confidence is not None]
                if not cands:
                    continue
                sims = similarity.pairwise([step.content], [s.content for s in cands])[0]
                best = int(sims.argmax())
                if sims[best] >= tau:
                    values.append(cands[best].expressed_confidence)
            step.expressed_confidence = sum(values) / len(values) if values else None
        out.append(rep)
    return out
