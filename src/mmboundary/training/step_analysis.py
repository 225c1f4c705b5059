"""Per-completion analysis for the stage 2 rewards (METHOD.md section 6), computed once and shared.

For each completion a :class:`StepAnalyzer` parses the steps and computes e_t (expressed
confidence; a step without a statement counts ``judging.rules.MISSING_STATEMENT_CONFIDENCE``),
a_t and ans (the one rule set evaluation uses: ``judging.rules.StepRules`` -- final answer from
the last step stating one, strict answer judge, one-to-one alignment, the dataset's step judge),
i_t (internal confidence, an :class:`InternalConfidence` scorer) and the format score
(``training.rewards.format_score``). The reward functions in ``training.rewards`` read the
cached :class:`StepAnalysis`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mmboundary.data.schema import Sample, Step
from mmboundary.judging.rules import MISSING_STATEMENT_CONFIDENCE, RuleConfig, StepRules
from mmboundary.training.rewards import format_score

__all__ = ["MISSING_STATEMENT_CONFIDENCE", "InternalConfidence", "StepAnalysis", "StepAnalyzer",
           "completion_text"]


class Similarity(Protocol):
    """``pairwise(a, b) -> [len(a), len(b)]`` similarities in [0, 1] (models.similarity)."""

    def pairwise(self, a: list[str], b: list[str]) -> np.ndarray: ...


class InternalConfidence(Protocol):
    """Scores i_t for every step of a batch of completions (one batched model pass).

    Called with the samples, their images (PIL or None), the completion texts and the parsed
    steps; returns one list of values in [0, 1] per completion, one per step, on the statements'
    scale: the level value (2k - 1) / 10 of the fused C by default
    (``confidence.InternalConfidenceScorer``, METHOD.md section 6).
    """

    def __call__(self, samples: Sequence[Sample], images: Sequence[Any], texts: Sequence[str],
                 steps: Sequence[Sequence[Step]]) -> list[list[float]]: ...


@dataclass
class StepAnalysis:
    """Everything the rewards need about one completion (``None`` = unknown, see module doc)."""

    sample_id: str
    steps: list[Step]
    expressed: list[float]
    has_statement: list[bool]
    step_correct: list[float] | None
    internal: list[float] | None
    answer: str | None
    answer_correct: float | None
    format: float
    problems: list[str] = field(default_factory=list)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content or "")
    return ""


class StepAnalyzer:
    """Parses each completion once and computes e_t, a_t, i_t, ans and the format score.

    Results are cached by (training step, sample id, completion text), so the three reward
    functions of one GRPO step share one parse, one similarity call and one internal-confidence
    pass. Entries of earlier training steps are dropped (with ``internal_from="policy"`` the same
    text scores differently once the policy has moved).

    Args:
        parse: text -> steps with ``statement`` / ``content_end`` / ``expressed_confidence`` set
            (default: ``text.statements.parse_steps`` with the shipped statement bank).
        similarity: g for alignment, open answers and the similarity judge (default:
            ``default_similarity()``).
        rules: the rule set (default ``StepRules(RuleConfig(), similarity=similarity)``), the
            same object type evaluation uses, so a_t and ans equal evaluation's verdicts.
        internal: scorer of i_t; ``None`` when R_CS is off (then ``internal`` stays ``None``).
        cache_size: most analyses kept.
    """

    def __init__(self, *, parse: Callable[[str], list[Step]] | None = None,
                 similarity: Similarity | None = None, rules: StepRules | None = None,
                 internal: InternalConfidence | None = None, cache_size: int = 4096) -> None:
        self._parse = parse
        self.rules = rules or StepRules(RuleConfig(), similarity=similarity)  # type: ignore[arg-type]
        self.internal = internal
        self.cache_size = cache_size
        self.parse_calls = 0
        self._cache: dict[tuple[Any, str, str], StepAnalysis] = {}
        self._step: Any = None
        self._logged: tuple | None = None

    def parse(self, text: str) -> list[Step]:
        self.parse_calls += 1
        if self._parse is None:
            from mmboundary.text import parse_steps

            self._parse = parse_steps
        return self._parse(text)

    def analyze(self, completions: Sequence[Any], sample: Sequence[Any], *,
                image: Sequence[Any] | None = None, trainer_state: Any = None,
                log_extra: Callable[[str, list], None] | None = None,
                log_metric: Callable[[str, float], None] | None = None) -> list[StepAnalysis]:
        """Analyses for a batch; ``sample`` = the dataset's ``sample`` column (JSON or Sample)."""
        samples = [s if isinstance(s, Sample) else Sample.model_validate_json(s) for s in sample]
        texts = [completion_text(c) for c in completions]
        step = getattr(trainer_state, "global_step", None)
        if step != self._step:
            self._cache.clear()
            self._step = step
        keys = [(step, s.id, t) for s, t in zip(samples, texts, strict=True)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            where = {k: keys.index(k) for k in todo}
            images = list(image) if image is not None else [None] * len(keys)
            fresh = self._compute([samples[where[k]] for k in todo], [images[where[k]] for k in todo],
                                  [k[2] for k in todo])
            if len(self._cache) + len(fresh) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(todo, fresh, strict=True))
        results = [self._cache[k] for k in keys]
        if tuple(keys) != self._logged:  # log each batch once, whichever reward asks first
            self._logged = tuple(keys)
            _log_analyses(results, log_extra, log_metric)
        return results

    def _compute(self, samples: list[Sample], images: list[Any],
                 texts: list[str]) -> list[StepAnalysis]:
        analyses = [self._parse_one(s, t) for s, t in zip(samples, texts, strict=True)]
        self._judge(analyses, samples)
        if self.internal is not None:
            with_steps = [i for i, a in enumerate(analyses) if a.steps]
            if with_steps:
                scores = self.internal([samples[i] for i in with_steps],
                                       [images[i] for i in with_steps],
                                       [texts[i] for i in with_steps],
                                       [analyses[i].steps for i in with_steps])
                for i, values in zip(with_steps, scores, strict=True):
                    analyses[i].internal = _checked_internal(values, analyses[i])
            for a in analyses:
                if not a.steps:
                    a.internal = []
        return analyses

    def _parse_one(self, sample: Sample, text: str) -> StepAnalysis:
        problems: list[str] = []
        try:
            steps = self.parse(text) if text.strip() else []
        except Exception as err:  # a parser failure on odd text scores low, never stops training
            steps = []
            problems.append(f"unparseable: {type(err).__name__}: {err}")
        if not text.strip():
            problems.append("empty completion")
        has = [s.expressed_confidence is not None for s in steps]
        expressed = [MISSING_STATEMENT_CONFIDENCE if s.expressed_confidence is None
                     else float(s.expressed_confidence) for s in steps]
        if steps and not all(has):
            problems.append(f"no confidence statement in {has.count(False)}/{len(steps)} steps")
        return StepAnalysis(sample_id=sample.id, steps=steps, expressed=expressed,
                            has_statement=has, step_correct=None, internal=None, answer=None,
                            answer_correct=None, format=0.0, problems=problems)

    def _judge(self, analyses: list[StepAnalysis], samples: list[Sample]) -> None:
        """ans, a_t and the format score from the rule set, for the whole batch at once."""
        judged = self.rules.judge_chains(samples, [a.steps for a in analyses])
        for a, j, sample in zip(analyses, judged, samples, strict=True):
            a.answer = j.answer
            a.problems.extend(p for p in j.problems if not (p.startswith("no answer step")
                                                            and not a.steps))
            if j.answer_judgement is None:
                a.answer_correct = None
            else:  # the graded score (VQA soft accuracy) for R_KA; a missing answer scores 0
                a.answer_correct = float(j.answer_judgement.score)
            values = [v.value for v in j.steps]
            unknown = sample.reference is None or not sample.reference.steps
            a.step_correct = None if unknown or any(v is None for v in values) \
                else [float(v) for v in values]
            a.format = format_score(a.has_statement, j.answer is not None)


def _checked_internal(values: Sequence[float], analysis: StepAnalysis) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != len(analysis.steps):
        raise ValueError(f"internal confidence scorer returned {len(values)} values for sample "
                         f"{analysis.sample_id}, expected one per step ({len(analysis.steps)})")
    unknown = sum(not math.isfinite(v) for v in values)
    if unknown:
        analysis.problems.append(f"no internal confidence for {unknown}/{len(values)} steps")
    return values


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else float("nan")


def _log_analyses(results: list[StepAnalysis], log_extra: Callable | None,
                  log_metric: Callable | None) -> None:
    if log_extra is not None:
        log_extra("mmb/steps", [len(a.steps) for a in results])
        log_extra("mmb/answer", [a.answer for a in results])
        log_extra("mmb/format", [a.format for a in results])
        log_extra("mmb/problems", ["; ".join(a.problems) for a in results])
    if log_metric is None:
        return
    metrics = {
        "mmb/format_score": _mean([a.format for a in results]),
        "mmb/answer_accuracy": _mean([a.answer_correct for a in results]),
        "mmb/step_accuracy": _mean([_mean(a.step_correct) if a.step_correct else None
                                    for a in results]),
        "mmb/mean_expressed": _mean([_mean(a.expressed) if a.expressed else None
                                     for a in results]),
        "mmb/mean_internal": _mean([float(np.nanmean(a.internal)) if a.internal
                                    and np.isfinite(a.internal).any() else None for a in results]),
        "mmb/statement_rate": _mean([_mean(a.has_statement) if a.steps else 0.0
                                     for a in results]),
    }
    for name, value in metrics.items():
        if math.isfinite(value):  # unknown (e.g. no references) is left out, not logged as nan
            log_metric(name, value)
