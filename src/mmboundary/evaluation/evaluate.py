"""Dataset-level evaluation of predictions (paper Table 1: ECE, MECE, Acc, F1; plus Brier, AUROC).

``evaluate_predictions(samples, responses, similarity)`` scores every response against its sample:

- answer: from the last step stating "So, the answer is X", judged by
  :func:`mmboundary.text.matching.judge_answer` (choice / VQA soft accuracy / similarity);
- response confidence: the expressed confidence of that answer step **(ours, METHOD.md 7)**;
  ``None`` when the step has none;
- steps: predicted step contents aligned one-to-one to the reference chain
  (:func:`~mmboundary.text.matching.align_steps`), correct when g >= tau; an aligned step
  that states an answer is judged by the answer instead **(ours: "So, the answer is nine" and
  "... thirty" have MiniLM similarity ~0.55, so tau cannot judge it)**;
- chain precision / recall / F1 per sample.

Aggregates: Acc = mean answer score; F1 = mean chain F1; ECE over responses with a confidence;
MECE over aligned steps with a confidence. A metric with nothing to compute it from is ``None``
with a reason in ``unavailable`` — never 0.

Responses without parsed steps are parsed here, in ONE place (:func:`parse_responses`): with the
statement parser (``parse="statement"``), numeric "(confidence 0.7)" (``"numeric"``), or plain
sentence splitting without confidences (``"none"``); ``"auto"`` (default) reads a response that
contains "(confidence" numerically and any other with the statement parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmboundary.data.schema import Response, Sample, extract_answer
from mmboundary.evaluation import metrics as M
from mmboundary.models.similarity import SimilarityModel
from mmboundary.text.matching import (
    DEFAULT_ANSWER_TAU,
    DEFAULT_MIN_SIM,
    DEFAULT_STEP_TAU,
    AlignedStep,
    AnswerMode,
    align_steps,
    chain_scores,
    judge_answer,
)

ParseMode = Literal["auto", "statement", "numeric", "none"]
_NUMERIC_HINT = re.compile(r"\(\s*confidence\b", re.IGNORECASE)
RESULT_FORMAT = "mmboundary-eval/1"


@dataclass
class EvalConfig:
    """Every evaluation choice, stored with the result.

    ``correct_threshold``: an answer counts as correct for calibration metrics when its score
    (VQA soft accuracy can be 1/3, 2/3) is >= this **(ours)**; Acc averages the raw scores.
    """

    tau: float = DEFAULT_STEP_TAU
    answer_tau: float = DEFAULT_ANSWER_TAU
    min_sim: float = DEFAULT_MIN_SIM
    n_bins: int = 10
    answer_mode: AnswerMode = "auto"
    judge_answer_step_by_answer: bool = True
    correct_threshold: float = 0.5
    parse: ParseMode = "auto"
    similarity_model: str | None = None


@dataclass
class StepResult:
    index: int
    text: str
    expressed_confidence: float | None
    ref_index: int | None = None
    similarity: float | None = None
    correct: bool | None = None


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
    """Metrics, counts, reliability bins and per-sample details of one system on one dataset."""

    system: str
    dataset: str
    config: EvalConfig
    metrics: dict[str, float | None]
    unavailable: dict[str, str]
    counts: dict[str, int]
    reliability: dict[str, dict[str, list] | None]
    samples: list[SampleResult]

    def to_dict(self) -> dict[str, Any]:
        return {"format": RESULT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        if data.get("format") != RESULT_FORMAT:
            raise ValueError(f"not an evaluation result: format is {data.get('format')!r}, "
                             f"expected {RESULT_FORMAT!r}")
        samples = [SampleResult(**{**s, "steps": [StepResult(**t) for t in s["steps"]]})
                   for s in data["samples"]]
        return cls(data["system"], data["dataset"], EvalConfig(**data["config"]), data["metrics"],
                   data["unavailable"], data["counts"], data["reliability"], samples)

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
    from mmboundary.text.statements import default_parser

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


# --- per sample ---------------------------------------------------------------------------------

def _answer_step(response: Response) -> tuple[int | None, str | None]:
    for step in reversed(response.steps):
        answer = extract_answer(step.content)
        if answer is not None:
            return step.index, answer
    return None, None


def _has_gold(sample: Sample) -> bool:
    return bool(sample.direct_answers or sample.answers or sample.gold_answer
                or (sample.choices and sample.correct_choice_idx is not None))


def evaluate_sample(sample: Sample, response: Response, similarity: SimilarityModel | None,
                    config: EvalConfig) -> SampleResult:
    """Score one (already parsed) response; see the module docstring."""
    steps = response.steps
    answer_idx, answer = _answer_step(response)
    if _has_gold(sample):
        judged = judge_answer(sample, answer, similarity, config.answer_tau, config.answer_mode)
        score, correct, method = judged.score, judged.score >= config.correct_threshold, judged.method
    else:
        score, correct, method = None, None, "no gold answer"
    by_index = {s.index: s for s in steps}
    confidence = by_index[answer_idx].expressed_confidence if answer_idx is not None else None
    out = [StepResult(s.index, s.content.strip(), s.expressed_confidence) for s in steps]
    result = SampleResult(sample.id, answer, sample.gold_answer, score, correct, method,
                          confidence, out)
    if correct is None:
        result.problems.append("no gold answer: answer correctness unknown (left out of Acc, ECE)")
    if answer is None:
        result.problems.append("no answer step ('So, the answer is X')")
    refs = sample.reference.steps if sample.reference is not None else []
    if not refs:
        result.problems.append("no reference chain: no step alignment or F1")
        return result
    if similarity is None:
        raise ValueError(f"sample {sample.id}: step alignment needs a similarity model")
    pairs = align_steps([s.text for s in out], refs, similarity, config.tau, config.min_sim,
                        match=sample.step_match)
    if config.judge_answer_step_by_answer and answer_idx is not None and correct is not None:
        pos = next((k for k, s in enumerate(steps) if s.index == answer_idx), None)
        pairs = [AlignedStep(p.pred_index, p.ref_index, p.similarity, correct)
                 if p.pred_index == pos else p for p in pairs]
    for p in pairs:
        out[p.pred_index].ref_index = p.ref_index
        out[p.pred_index].similarity = round(p.similarity, 6)
        out[p.pred_index].correct = p.correct
    scores = chain_scores(pairs, len(out), len(refs))
    result.precision, result.recall, result.f1 = scores.precision, scores.recall, scores.f1
    result.n_ref = len(refs)
    return result


# --- dataset ------------------------------------------------------------------------------------

def _calibration(prefix: str, conf: list[float], correct: list[bool], n_bins: int, what: str,
                 metrics: dict[str, float | None], unavailable: dict[str, str]) -> dict | None:
    names = {"response": ("ece", "brier", "auroc"), "step": ("mece", "step_brier", "step_auroc")}
    ece, brier, roc = names[prefix]
    if not conf:
        for name in (ece, brier, roc):
            metrics[name] = None
            unavailable[name] = f"no {what} carries an expressed confidence"
        return None
    metrics[ece] = M.expected_calibration_error(conf, correct, n_bins=n_bins)
    metrics[brier] = M.brier_score(conf, correct)
    metrics[roc] = M.auroc(conf, correct)
    if metrics[roc] is None:
        unavailable[roc] = f"every {what} with a confidence is {'correct' if correct[0] else 'wrong'}"
    return M.reliability_diagram_data(conf, correct, n_bins=n_bins).to_dict()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(results: list[SampleResult], config: EvalConfig, system: str, dataset: str,
              counts: dict[str, int]) -> EvalResult:
    """Dataset metrics from per-sample results."""
    judged = [r for r in results if r.answer_score is not None]
    metrics: dict[str, float | None] = {"accuracy": _mean([r.answer_score for r in judged])}
    unavailable: dict[str, str] = {}
    scored = [r for r in results if r.f1 is not None]
    for name in ("precision", "recall", "f1"):
        metrics[name] = _mean([getattr(r, name) for r in scored])
    if not scored:
        unavailable["f1"] = "no sample has a reference chain"
    if not judged:
        unavailable["accuracy"] = "no evaluated sample has a gold answer"
    with_conf = [r for r in judged if r.response_confidence is not None]
    steps = [s for r in results for s in r.steps
             if s.correct is not None and s.expressed_confidence is not None]
    reliability = {
        "response": _calibration("response", [r.response_confidence for r in with_conf],
                                 [r.answer_correct for r in with_conf], config.n_bins,
                                 "response's answer step", metrics, unavailable),
        "step": _calibration("step", [s.expressed_confidence for s in steps],
                             [s.correct for s in steps], config.n_bins, "aligned step",
                             metrics, unavailable),
    }
    counts = {**counts, "evaluated": len(results), "with_reference": len(scored),
              "with_gold": len(judged),
              "with_answer": sum(r.answer is not None for r in results),
              "with_response_confidence": len(with_conf),
              "predicted_steps": sum(len(r.steps) for r in results),
              "aligned_steps": sum(s.correct is not None for r in results for s in r.steps),
              "aligned_steps_with_confidence": len(steps)}
    return EvalResult(system, dataset, config, metrics, unavailable, counts, reliability, results)


def evaluate_predictions(samples: Sequence[Sample], responses: Sequence[Response],
                         similarity: SimilarityModel | None, tau: float = DEFAULT_STEP_TAU, *,
                         system: str = "system", dataset: str | None = None,
                         config: EvalConfig | None = None) -> EvalResult:
    """Evaluate one system's responses (one per sample) on a dataset.

    A response whose ``meta`` records an ``error`` is counted as failed and left out; samples
    without a response are counted as missing; a response for an unknown sample id, or two
    responses for one sample, raise ``ValueError``.
    """
    config = config or EvalConfig(tau=tau)
    if config.similarity_model is None and similarity is not None:
        config.similarity_model = str(getattr(similarity, "model_path", type(similarity).__name__))
    by_id = {s.id: s for s in samples}
    seen: set[str] = set()
    usable: list[Response] = []
    failed = 0
    for i, r in enumerate(responses):
        if r.sample_id not in by_id:
            raise ValueError(f"response {i}: sample_id {r.sample_id!r} is not in the dataset")
        if r.sample_id in seen:
            raise ValueError(f"response {i}: a second response for sample {r.sample_id!r}")
        seen.add(r.sample_id)
        if "error" in (r.meta or {}):
            failed += 1
        else:
            usable.append(r)
    parsed = parse_responses(usable, config.parse)
    _prefetch(parsed, [by_id[r.sample_id] for r in parsed], similarity)
    results = [evaluate_sample(by_id[r.sample_id], r, similarity, config) for r in parsed]
    counts = {"samples": len(by_id), "responses": len(responses), "failed": failed,
              "missing": len(by_id) - len(seen)}
    name = dataset or (samples[0].dataset if samples else "unknown")
    return aggregate(results, config, system, name, counts)


def _prefetch(responses: Sequence[Response], samples: Sequence[Sample],
              similarity: SimilarityModel | None) -> None:
    """Embed every step and reference text in one batch when the model caches embeddings."""
    encode = getattr(similarity, "encode", None)
    if encode is None:
        return
    texts = [s.content.strip() for r in responses for s in r.steps]
    texts += [t for s in samples if s.reference is not None for t in s.reference.steps]
    texts += [a for r in responses if (a := _answer_step(r)[1]) is not None]
    texts += [t for s in samples for t in (s.answers or s.choices or [])]
    texts += [s.gold_answer for s in samples if s.gold_answer]
    if texts:
        encode(list(dict.fromkeys(texts)))
