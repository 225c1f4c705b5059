"""The one rule set that decides what is right: used by evaluation, the RL rewards and the baselines.

Every verdict a calibration number rests on is made here, once:

- **final answer** of a response: the answer stated by the *last step that states one*
  ("So, the answer is X"), :func:`final_answer`;
- **gold**: a sample has a gold answer when it has choices with a correct index, direct answers,
  answers, or a reference chain that states one (:func:`has_gold`);
- **answer correctness**: :func:`mmboundary.text.matching.judge_answer` (strict: a choice is
  matched only by letter, normalised text, or similarity >= ``choice_tau`` with a margin of
  ``choice_margin`` over the runner-up), correct when its score >= ``correct_threshold``;
- **alignment** of predicted to reference steps (:func:`align`): the answer step pairs with the
  reference's answer step; exact-match datasets (``Sample.step_match == "exact"``) pair identical
  normalised steps first; the rest one-to-one by similarity (Hungarian);
- **step correctness** a_t: the aligned pair judged by the dataset's step judge
  (:mod:`mmboundary.judging`; "exact" for exact-match datasets), the answer step by the answer's
  verdict; a predicted step left unaligned is not correct (a_t = ``UNALIGNED_STEP_CORRECTNESS``);
  MECE leaves unaligned steps out (METHOD.md section 7), chain precision counts them as wrong;
- **a step without a statement**: ``MISSING_STATEMENT_CONFIDENCE`` as e_t in the rewards (METHOD.md
  section 6); left out of ECE/MECE in evaluation, whose tables report the coverage instead;
- **agreement** of two predicted steps (SC, Multisample): :meth:`StepRules.agree`, the same judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmboundary.data.schema import Sample, Step, extract_answer
from mmboundary.judging.base import JudgeItem, StepJudge, StepVerdict, make_judge
from mmboundary.judging.simple import DEFAULT_STEP_TAU, ExactJudge, normalize_step
from mmboundary.models.similarity import SimilarityModel
from mmboundary.text.matching import (
    DEFAULT_ANSWER_TAU,
    DEFAULT_CHOICE_MARGIN,
    DEFAULT_CHOICE_TAU,
    AnswerJudgement,
    AnswerMode,
    judge_answer,
)

#: e_t of a step that carries no confidence statement, in the rewards (METHOD.md section 6).
MISSING_STATEMENT_CONFIDENCE = 0.5
#: a_t of a predicted step no reference step is aligned with (ours): it restates nothing of the
#: reference, so it is not counted correct (chain precision agrees).
UNALIGNED_STEP_CORRECTNESS = 0.0
#: The judge for non-exact datasets when ``judge="auto"`` (ours: the offline assertion-consistency
#: judge; "similarity" is METHOD.md's rule, kept as a baseline and an option).
DEFAULT_JUDGE = "assertions"


@dataclass
class RuleConfig:
    """Every choice of the rule set, stored with each evaluation result and RL config.

    ``judge``: step judge name for datasets judged by meaning ("auto" = ``DEFAULT_JUDGE``;
    exact-match datasets always use "exact"); ``judge_options``: its constructor options.
    ``tau``: the similarity judge's threshold. ``answer_tau``: open-answer similarity threshold.
    ``choice_tau``/``choice_margin``: strict choice matching (see ``text.matching.match_choice``).
    ``min_sim``: pairs below this similarity are never aligned. ``answer_mode``: how answers are
    judged (``auto`` = by the sample's fields). ``correct_threshold``: an answer whose score (VQA
    soft accuracy can be 1/3, 2/3) is >= this counts as correct **(ours)**.
    """

    judge: str = "auto"
    judge_options: dict[str, Any] = field(default_factory=dict)
    tau: float = DEFAULT_STEP_TAU
    answer_tau: float = DEFAULT_ANSWER_TAU
    choice_tau: float = DEFAULT_CHOICE_TAU
    choice_margin: float = DEFAULT_CHOICE_MARGIN
    min_sim: float = 0.0
    answer_mode: AnswerMode = "auto"
    correct_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("tau", "answer_tau", "choice_tau", "choice_margin", "min_sim",
                     "correct_threshold"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"RuleConfig.{name} must be in [0, 1], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepJudgement:
    """The verdict on one predicted step: its aligned reference step (or None), the alignment
    similarity, ``correct`` (None when the sample has no reference chain) and the judge's reason."""

    ref_index: int | None
    similarity: float | None
    correct: bool | None
    reason: str = ""

    @property
    def value(self) -> float | None:
        """a_t: 1.0 / 0.0, ``UNALIGNED_STEP_CORRECTNESS`` when unaligned, None when unknown."""
        if self.correct is None:
            return None
        if self.ref_index is None:
            return UNALIGNED_STEP_CORRECTNESS
        return float(self.correct)


@dataclass
class ChainJudgement:
    """Everything the rule set decides about one response (see the module docstring)."""

    sample_id: str
    answer_index: int | None
    answer: str | None
    answer_judgement: AnswerJudgement | None
    answer_correct: bool | None
    steps: list[StepJudgement]
    problems: list[str] = field(default_factory=list)

    @property
    def answer_score(self) -> float | None:
        return None if self.answer_judgement is None else self.answer_judgement.score


def final_answer(steps: Sequence[Step] | Sequence[str]) -> tuple[int | None, str | None]:
    """(position in ``steps``, answer) of the last step that states an answer, else (None, None).

    >>> final_answer(["There are 2 dogs.", "So, the answer is 2.", "I think."])
    (1, '2')
    """
    for pos in range(len(steps) - 1, -1, -1):
        step = steps[pos]
        answer = extract_answer(step if isinstance(step, str) else step.content)
        if answer is not None:
            return pos, answer
    return None, None


def has_gold(sample: Sample) -> bool:
    """Whether the sample's answer correctness can be judged at all."""
    return bool(sample.direct_answers or sample.answers or sample.gold_answer
                or (sample.choices and sample.correct_choice_idx is not None))


def _reference_answer_index(refs: Sequence[str]) -> int | None:
    return final_answer(list(refs))[0]


def align(pred: Sequence[str], refs: Sequence[str], sims: np.ndarray, *, exact: bool,
          pred_answer: int | None = None, min_sim: float = 0.0) -> dict[int, int]:
    """One-to-one alignment ``{pred position: ref position}`` (see the module docstring).

    ``sims[i, j]`` = g(pred_i, ref_j). The answer step ``pred_answer`` pairs with the reference's
    answer step when both exist; with ``exact``, identical normalised steps pair next (in order);
    the remaining steps are paired by Hungarian assignment maximising total similarity, pairs
    below ``min_sim`` left unaligned.
    """
    from scipy.optimize import linear_sum_assignment

    pairs: dict[int, int] = {}
    ref_answer = _reference_answer_index(refs)
    if pred_answer is not None and ref_answer is not None:
        pairs[pred_answer] = ref_answer
    if exact:
        keys = {}
        for j, r in enumerate(refs):
            if j not in pairs.values():
                keys.setdefault(normalize_step(r), []).append(j)
        for i, p in enumerate(pred):
            free = keys.get(normalize_step(p)) if i not in pairs else None
            if free:
                pairs[i] = free.pop(0)
    rows = [i for i in range(len(pred)) if i not in pairs]
    cols = [j for j in range(len(refs)) if j not in pairs.values()]
    if rows and cols:
        sub = sims[np.ix_(rows, cols)]
        for a, b in zip(*linear_sum_assignment(sub, maximize=True), strict=True):
            if sub[a, b] >= min_sim:
                pairs[rows[a]] = cols[b]
    return dict(sorted(pairs.items()))


class StepRules:
    """The rule set with its models: ``judge_chains(samples, steps)`` -> one ChainJudgement each.

    Args:
        config: the :class:`RuleConfig`.
        similarity: g for alignment, open answers, choice matching and the similarity judge
            (default: the offline all-MiniLM-L6-v2, loaded on first use).
        judge: a ready step judge for non-exact datasets (default: ``make_judge(config.judge)``).
    """

    def __init__(self, config: RuleConfig | None = None, *,
                 similarity: SimilarityModel | None = None, judge: StepJudge | None = None) -> None:
        self.config = config or RuleConfig()
        self._similarity = similarity
        self._judge = judge
        self._exact = ExactJudge()
        #: pairs judged per judge name in the last ``judge_chains`` call (for the record)
        self.last_counts: dict[str, int] = {}

    @property
    def similarity(self) -> SimilarityModel:
        if self._similarity is None:
            from mmboundary.models.similarity import default_similarity

            self._similarity = default_similarity()
        return self._similarity

    @property
    def judge(self) -> StepJudge:
        if self._judge is None:
            name = DEFAULT_JUDGE if self.config.judge == "auto" else self.config.judge
            options = dict(self.config.judge_options)
            if name in ("similarity", "assertions"):
                options.setdefault("similarity", self.similarity)
            if name == "similarity":
                options.setdefault("tau", self.config.tau)
            self._judge = make_judge(name, **options)
        return self._judge

    @property
    def judge_name(self) -> str:
        return DEFAULT_JUDGE if self.config.judge == "auto" else self.config.judge

    def judge_answer(self, sample: Sample, answer: str | None) -> AnswerJudgement | None:
        """The answer's judgement (None when the sample has no gold answer)."""
        if not has_gold(sample):
            return None
        c = self.config
        needs_sim = answer is not None and sample.answer_mode not in ("exact",)
        verdict = judge_answer(sample, answer, self.similarity if needs_sim else None,
                               c.answer_tau, c.answer_mode, choice_tau=c.choice_tau,
                               choice_margin=c.choice_margin)
        if verdict.method == "similarity" and verdict.score > 0 and answer is not None:
            return _unless_contradicted(sample, answer, verdict)
        return verdict

    def judge_chains(self, samples: Sequence[Sample],
                     steps: Sequence[Sequence[Step] | Sequence[str]]) -> list[ChainJudgement]:
        """Answer, alignment and step verdicts for a batch (one similarity and one judge call
        per judge for the whole batch)."""
        texts = [[s if isinstance(s, str) else s.content.strip() for s in chain] for chain in steps]
        out: list[ChainJudgement] = []
        for sample, chain in zip(samples, texts, strict=True):
            pos, answer = final_answer(chain)
            verdict = self.judge_answer(sample, answer)
            correct = None if verdict is None else verdict.score >= self.config.correct_threshold
            judged = ChainJudgement(sample.id, pos, answer, verdict, correct,
                                    [StepJudgement(None, None, None) for _ in chain])
            if verdict is None:
                judged.problems.append("no gold answer: answer correctness unknown")
            if answer is None and chain:
                judged.problems.append("no answer step ('So, the answer is X')")
            out.append(judged)
        self._judge_steps(samples, texts, out)
        return out

    def step_labels(self, samples: Sequence[Sample],
                    steps: Sequence[Sequence[Step] | Sequence[str]]) -> list[list[float | None]]:
        """Per step of each chain: 1.0 / 0.0 when aligned to a reference step and judged, None
        when unaligned or unknown (MECE's population): the labels a level rule fitted to step
        accuracy (``confidence.LevelCuts(rule="accuracy")``) learns from."""
        return [[None if j.ref_index is None or j.correct is None else float(j.correct)
                 for j in chain.steps] for chain in self.judge_chains(samples, steps)]

    def _judge_steps(self, samples: Sequence[Sample], texts: list[list[str]],
                     out: list[ChainJudgement]) -> None:
        refs = [list(s.reference.steps) if s.reference is not None else [] for s in samples]
        sims = self._pair_similarities(texts, refs)
        items: dict[str, list[tuple[int, int, int, JudgeItem]]] = {"exact": [], "judge": []}
        for k, (sample, chain, ref) in enumerate(zip(samples, texts, refs, strict=True)):
            if not ref:
                out[k].problems.append("no reference chain: step correctness unknown")
                continue
            exact = sample.step_match == "exact"
            pairs = align(chain, ref, sims[k], exact=exact, pred_answer=out[k].answer_index,
                          min_sim=self.config.min_sim)
            for i in range(len(chain)):
                out[k].steps[i] = StepJudgement(None, None, False, "not aligned")
            for i, j in pairs.items():
                sim = float(sims[k][i, j])
                if i == out[k].answer_index and out[k].answer_correct is not None:
                    out[k].steps[i] = StepJudgement(j, sim, out[k].answer_correct,
                                                    "judged by its answer")
                    continue
                item = JudgeItem(chain[i], ref[j], sample.question, sample.gold_answer,
                                 tuple(ref), sim)
                items["exact" if exact else "judge"].append((k, i, j, item))
        self.last_counts = {}
        for kind, todo in items.items():
            if not todo:
                continue
            judge = self._exact if kind == "exact" else self.judge
            self.last_counts[judge.name] = self.last_counts.get(judge.name, 0) + len(todo)
            verdicts = _judge_each(judge, [it for *_, it in todo])
            for (k, i, j, item), v in zip(todo, verdicts, strict=True):
                if isinstance(v, Exception):  # one failed judgement never stops a run
                    out[k].steps[i] = StepJudgement(j, item.similarity, None, f"judge error: {v}")
                    out[k].problems.append(f"step {i}: the {judge.name} judge failed: {v}")
                else:
                    out[k].steps[i] = StepJudgement(j, item.similarity, bool(v.correct), v.reason)

    def _pair_similarities(self, texts: list[list[str]], refs: list[list[str]]) -> list[np.ndarray]:
        """g(pred_i, ref_j) for every sample, from ONE pairwise call over the unique texts."""
        preds = sorted({t for chain in texts for t in chain})
        golds = sorted({t for ref in refs for t in ref})
        if not preds or not golds:
            return [np.zeros((len(c), len(r))) for c, r in zip(texts, refs, strict=True)]
        matrix = np.asarray(self.similarity.pairwise(preds, golds), dtype=np.float64)
        if matrix.shape != (len(preds), len(golds)):
            raise ValueError(f"similarity.pairwise returned shape {matrix.shape}, expected "
                             f"{(len(preds), len(golds))}")
        row = {t: i for i, t in enumerate(preds)}
        col = {t: j for j, t in enumerate(golds)}
        return [matrix[np.ix_([row[t] for t in chain], [col[t] for t in ref])]
                if chain and ref else np.zeros((len(chain), len(ref)))
                for chain, ref in zip(texts, refs, strict=True)]

    def agreement(self, step_match: str) -> Callable[[str, str], bool]:
        """``agree(step_a, step_b) -> bool`` for SC and Multisample under a dataset's step rule:
        exact normalised match for ``step_match == "exact"``, else the step judge (``step_b`` as
        the reference)."""
        if step_match == "exact":
            return lambda a, b: normalize_step(a) == normalize_step(b)
        if step_match != "similarity":
            raise ValueError(f"step_match must be 'exact' or 'similarity', got {step_match!r}")
        probe = Sample(id="agreement", dataset="agreement", question="?")
        return lambda a, b: self.agree(probe, [a], [b])[0]

    def agree(self, sample: Sample, a: Sequence[str], b: Sequence[str]) -> list[bool]:
        """Whether step ``a[n]`` says the same as ``b[n]``, under the sample's step rule (exact
        match for exact datasets, else the step judge with ``b`` as the reference)."""
        if sample.step_match == "exact":
            return [normalize_step(x) == normalize_step(y) for x, y in zip(a, b, strict=True)]
        if not a:
            return []
        sims = np.asarray(self.similarity.paired(list(a), list(b)), dtype=np.float64)
        items = [JudgeItem(x, y, sample.question, None, (), float(s))
                 for x, y, s in zip(a, b, sims, strict=True)]
        return [v.correct for v in self.judge.judge(items)]


def _unless_contradicted(sample: Sample, answer: str,
                         verdict: AnswerJudgement) -> AnswerJudgement:
    """An open answer close to the gold by similarity is still wrong when it contradicts every
    gold answer in what it asserts (**ours**: MiniLM scores "3" vs "2" at 0.87 and "red" vs
    "blue" at 0.73, above the 0.55 threshold): the assertion judge's contradiction rules
    (numbers, colours, polarity, exclusive groups) on "The answer is X." pairs."""
    from mmboundary.judging.assertions import contradiction
    from mmboundary.judging.lexicon import load_lexicon

    golds = list(sample.answers) or ([sample.gold_answer] if sample.gold_answer else [])
    lex = load_lexicon(None)
    reasons = [contradiction(JudgeItem(f"The answer is {answer}.", f"The answer is {g}."), lex)
               for g in golds]
    if golds and all(reasons):
        return AnswerJudgement(0.0, f"similarity, contradicted: {reasons[0]}",
                               similarity=verdict.similarity)
    return verdict


def _judge_each(judge: StepJudge, items: list[JudgeItem]) -> list[StepVerdict | Exception]:
    """Verdicts in order; a judge with ``judge_each`` (the LLM judge) may return an error in an
    item's place, which becomes that step's unknown verdict (named in the sample's problems)."""
    each = getattr(judge, "judge_each", None)
    verdicts = each(items) if each is not None else judge.judge(items)
    if len(verdicts) != len(items):
        raise ValueError(f"step judge {judge.name!r} returned {len(verdicts)} verdicts for "
                         f"{len(items)} pairs")
    return list(verdicts)


__all__ = ["DEFAULT_JUDGE", "MISSING_STATEMENT_CONFIDENCE", "UNALIGNED_STEP_CORRECTNESS",
           "ChainJudgement", "RuleConfig", "StepJudgement", "StepRules", "StepVerdict", "align",
           "final_answer", "has_gold"]
