"""Dataset-level evaluation of predictions (paper Table 1: ECE, MECE, Acc, F1; and the field's
discrimination and coverage metrics next to them).

``evaluate_predictions(samples, responses, similarity)`` scores every response against its sample
with the one rule set (:class:`mmboundary.judging.rules.StepRules`, which the RL rewards use too):
final answer, answer correctness, alignment to the reference chain and each step's verdict.

- response confidence = the expressed confidence of the answer step **(ours, METHOD.md 7)**;
- ECE over responses with a confidence; MECE (:func:`~mmboundary.evaluation.metrics.
  multi_granularity_ece`) over aligned steps with a confidence; Acc = mean answer score; F1 = mean
  chain F1; AUROC, Brier and AURC at both granularities; coverage = share of judged answers /
  aligned steps that carry a parseable confidence (a system that says nothing is not calibrated,
  it is silent: the table shows both);
- every metric with a 95% percentile bootstrap interval over questions (``EvalConfig.bootstrap``
  replicates); per step type (perception = aligned to an ``Image_level`` reference step,
  reasoning = ``Reasoning_level``) step accuracy, MECE and AUROC.

A metric with nothing to compute it from is ``None`` with a reason in ``unavailable``, never 0.
Responses without parsed steps are parsed here, in ONE place (:func:`parse_responses`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmboundary.data.failures import response_number_failure
from mmboundary.data.schema import Response, Sample
from mmboundary.evaluation import metrics as M
from mmboundary.evaluation.summary import summarize
from mmboundary.judging.rules import ChainJudgement, RuleConfig, StepRules, final_answer
from mmboundary.models.similarity import SimilarityModel

ParseMode = Literal["auto", "statement", "numeric", "none"]
_NUMERIC_HINT = re.compile(r"\(\s*confidence\b", re.IGNORECASE)
RESULT_FORMAT = "mmboundary-eval/2"
_OLD_FORMATS = ("mmboundary-eval/1",)


@dataclass
class EvalConfig:
    """Every evaluation choice, stored with the result.

    ``rules``: the rule set (judge, thresholds; :class:`~mmboundary.judging.rules.RuleConfig`).
    ``n_bins``: equal-width bins of ECE/MECE (10, the paper's). ``parse``: how responses without
    steps are parsed. ``bootstrap``: replicates of the 95% intervals (0 = none); ``seed`` theirs.
    """

    rules: RuleConfig = field(default_factory=RuleConfig)
    n_bins: int = 10
    parse: ParseMode = "auto"
    bootstrap: int = 1000
    seed: int = 0
    similarity_model: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        data = dict(data)
        rules = data.pop("rules", None)
        if rules is None:  # a format-1 result: flat thresholds
            keys = {"tau", "answer_tau", "min_sim", "answer_mode", "correct_threshold"}
            rules = {k: data[k] for k in keys if k in data}
        known = {"n_bins", "parse", "bootstrap", "seed", "similarity_model"}
        return cls(rules=RuleConfig(**rules), **{k: v for k, v in data.items() if k in known})


@dataclass
class StepResult:
    index: int
    text: str
    expressed_confidence: float | None
    ref_index: int | None = None
    similarity: float | None = None
    correct: bool | None = None
    kind: str | None = None
    reason: str = ""


@dataclass
class SampleResult:
    sample_id: str
    answer: str | None
    gold: str | None
    answer_score: float | None
    answer_correct: bool | None
    answer_method: str
    response_confidence: float | None
    steps: list[StepResult]
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    n_ref: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """Metrics, intervals, counts, reliability bins and per-sample details of one system."""

    system: str
    dataset: str
    config: EvalConfig
    metrics: dict[str, float | None]
    unavailable: dict[str, str]
    counts: dict[str, int]
    reliability: dict[str, dict[str, list] | None]
    samples: list[SampleResult]
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    breakdown: dict[str, dict[str, float | None]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": RESULT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        if data.get("format") not in (RESULT_FORMAT, *_OLD_FORMATS):
            raise ValueError(f"not an evaluation result: format is {data.get('format')!r}, "
                             f"expected {RESULT_FORMAT!r}")
        samples = [SampleResult(**{**s, "steps": [StepResult(**t) for t in s["steps"]]})
                   for s in data["samples"]]
        return cls(data["system"], data["dataset"], EvalConfig.from_dict(data["config"]),
                   data["metrics"], data["unavailable"], data["counts"], data["reliability"],
                   samples, data.get("intervals", {}), data.get("breakdown", {}),
                   data.get("failures", []))

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        import json

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: cannot read an evaluation result: {err}") from err


# --- predictions --------------------------------------------------------------------------------

_THOUGHT = re.compile(r"^\s*Thought:\s*", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"(^|\n)\s*Answer:\s*", re.IGNORECASE)


def response_from_general_output(sample_id: str, text: str, model: str | None = None) -> Response:
    """The authors' CulturalVQA ``general_output`` ("Thought: ... Answer: So the answer is hot.")
    as a Response: the "Thought:" and "Answer:" labels are removed (so they do not distort step
    similarity) and the rest is split into sentence steps; no confidences."""
    from mmboundary.text.steps import split_steps

    clean = _ANSWER_LABEL.sub(lambda m: m.group(1), _THOUGHT.sub("", text)).strip()
    return Response(sample_id=sample_id, text=clean, model=model, steps=split_steps(clean),
                    meta={"source": "general_output"})


def general_output_responses(samples: Sequence[Sample]) -> list[Response]:
    """One Response per sample that carries ``meta["general_output"]`` (CulturalVQA files)."""
    return [response_from_general_output(s.id, s.meta["general_output"], "general_output")
            for s in samples if s.meta.get("general_output")]


def _parse_texts(texts: list[str], parse: ParseMode) -> list[list]:
    if parse == "none":
        from mmboundary.text.steps import split_steps

        return [split_steps(t) for t in texts]
    if parse not in ("statement", "numeric"):
        raise ValueError(f"parse must be 'auto', 'statement', 'numeric' or 'none', got {parse!r}")
    from mmboundary.text import default_parser

    return default_parser(parse).parse_many(texts) if texts else []


def parse_responses(responses: Sequence[Response], parse: ParseMode = "auto") -> list[Response]:
    """Responses with steps: those that have steps are kept as they are; the others are split
    and (``parse`` != "none") their trailing confidence statements detected, in one batch per
    parser. The one place evaluation turns text into steps with expressed confidences."""
    out = list(responses)
    todo = [i for i, r in enumerate(responses) if not r.steps]
    groups: dict[ParseMode, list[int]] = {}
    for i in todo:
        mode = parse
        if parse == "auto":
            mode = "numeric" if _NUMERIC_HINT.search(responses[i].text) else "statement"
        groups.setdefault(mode, []).append(i)
    for mode, indices in groups.items():
        parsed = _parse_texts([responses[i].text for i in indices], mode)
        for i, steps in zip(indices, parsed, strict=True):
            out[i] = responses[i].model_copy(update={"steps": steps})
    return out


# --- per sample --------------------------------------------------------------------------------

def _step_kind(sample: Sample, ref_index: int | None) -> str | None:
    if ref_index is None or sample.reference is None:
        return None
    return "perception" if ref_index < len(sample.reference.image_level) else "reasoning"


def sample_result(sample: Sample, response: Response, judged: ChainJudgement) -> SampleResult:
    """One response's result from the rule set's verdicts."""
    steps = response.steps
    verdict = judged.answer_judgement
    confidence = (steps[judged.answer_index].expressed_confidence
                  if judged.answer_index is not None else None)
    out = [StepResult(s.index, s.content.strip(), s.expressed_confidence) for s in steps]
    for step, v in zip(out, judged.steps, strict=True):
        if v.ref_index is not None:
            step.ref_index, step.similarity = v.ref_index, round(float(v.similarity or 0.0), 6)
            step.correct, step.kind = v.correct, _step_kind(sample, v.ref_index)
        step.reason = v.reason
    result = SampleResult(sample.id, judged.answer, sample.gold_answer,
                          None if verdict is None else verdict.score, judged.answer_correct,
                          "no gold answer" if verdict is None else verdict.method, confidence,
                          out, problems=list(judged.problems))
    refs = sample.reference.steps if sample.reference is not None else []
    if refs:
        n_correct = sum(1 for v in judged.steps if v.ref_index is not None and v.correct)
        scores = M.chain_scores(n_correct, len(out), len(refs))
        result.precision, result.recall, result.f1 = scores.precision, scores.recall, scores.f1
        result.n_ref = len(refs)
    return result


# --- dataset ------------------------------------------------------------------------------------

def evaluate_predictions(samples: Sequence[Sample], responses: Sequence[Response],
                         similarity: SimilarityModel | None, *, system: str = "system",
                         dataset: str | None = None, config: EvalConfig | None = None,
                         rules: StepRules | None = None) -> EvalResult:
    """Evaluate one system's responses (one per sample) on a dataset.

    A response whose ``meta`` records an ``error``, or whose steps carry a NaN or out-of-range
    confidence (``data.failures.response_number_failure``), is counted as failed and left out
    (the latter named in ``EvalResult.failures``); samples
    without a response are counted as missing; a response for an unknown sample id, or two
    responses for one sample, raise ``ValueError``. ``rules`` (default: built from
    ``config.rules`` and ``similarity``) lets several systems share one loaded judge.
    """
    config = config or EvalConfig()
    if config.similarity_model is None and similarity is not None:
        config.similarity_model = str(getattr(similarity, "model_path", type(similarity).__name__))
    rules = rules or StepRules(config.rules, similarity=similarity)
    by_id = {s.id: s for s in samples}
    seen: set[str] = set()
    usable: list[Response] = []
    problems: list[str] = []
    failed = 0
    for i, r in enumerate(responses):
        if r.sample_id not in by_id:
            raise ValueError(f"response {i}: sample_id {r.sample_id!r} is not in the dataset")
        if r.sample_id in seen:
            raise ValueError(f"response {i}: a second response for sample {r.sample_id!r}")
        seen.add(r.sample_id)
        broken = None if "error" in (r.meta or {}) else response_number_failure(r)
        if "error" in (r.meta or {}) or broken is not None:
            failed += 1  # a NaN / out-of-range confidence fails its record, named, not the run
            if broken is not None:
                problems.append(str(broken))
        else:
            usable.append(r)
    parsed = parse_responses(usable, config.parse)
    ordered = [by_id[r.sample_id] for r in parsed]
    _prefetch(parsed, ordered, similarity)
    judged = rules.judge_chains(ordered, [r.steps for r in parsed])
    results = [sample_result(s, r, j) for s, r, j in zip(ordered, parsed, judged, strict=True)]
    counts = {"samples": len(by_id), "responses": len(responses), "failed": failed,
              "missing": len(by_id) - len(seen),
              # generation stopped by the token budget, not by the model (meta "finished")
              "cut_at_limit": sum((r.meta or {}).get("finished") is False for r in usable)}
    name = dataset or (samples[0].dataset if samples else "unknown")
    summary = summarize(results, n_bins=config.n_bins, bootstrap=config.bootstrap,
                        seed=config.seed)
    judged_by = {f"pairs_judged_{k}": v for k, v in rules.last_counts.items()}
    return EvalResult(system, name, config, summary.metrics, summary.unavailable,
                      {**counts, **summary.counts, **judged_by}, summary.reliability, results,
                      summary.intervals, summary.breakdown, problems)


def _prefetch(responses: Sequence[Response], samples: Sequence[Sample],
              similarity: SimilarityModel | None) -> None:
    """Embed every step and reference text in one batch when the model caches embeddings."""
    encode = getattr(similarity, "encode", None)
    if encode is None:
        return
    texts = [s.content.strip() for r in responses for s in r.steps]
    texts += [t for s in samples if s.reference is not None for t in s.reference.steps]
    texts += [a for r in responses if (a := final_answer(r.steps)[1]) is not None]
    texts += [t for s in samples for t in (s.answers or s.choices or [])]
    texts += [s.gold_answer for s in samples if s.gold_answer]
    if texts:
        encode(list(dict.fromkeys(texts)))
