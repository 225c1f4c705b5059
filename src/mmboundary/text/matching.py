"""Step matching, chain F1 and answer correctness (METHOD.md section 7).

- :func:`align_steps`: one-to-one alignment of predicted to reference steps (Hungarian, maximising
  total similarity); an aligned step is correct when its similarity is >= tau.
- :func:`chain_f1`: step-level precision / recall / F1 of one predicted chain.
- :func:`judge_answer`: answer correctness: multiple choice (letter, exact text, nearest choice),
  VQA soft accuracy over direct answers, or similarity to the gold answer (open questions).

Thresholds (**ours**, measured with all-MiniLM-L6-v2 on the authors' A-OKVQA chains by
``examples/measure_similarity_thresholds.py``; see the constants below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmboundary.data.schema import Sample
from mmboundary.models.similarity import SimilarityModel

# Step correctness threshold on g = max(cos, 0) of all-MiniLM-L6-v2 (ours). Measured on 400
# A-OKVQA val questions: a human rationale's best match in its own reference chain median 0.64
# (p25 0.53), in another question's chain median 0.13 (p90 0.27); Youden-best 0.34 (balanced acc
# 0.96). Two different steps of one chain already score median 0.59, so no threshold separates
# "same fact" from "same topic"; 0.5 (balanced acc 0.90) errs towards calling a step correct
# only when it clearly restates reference content.
DEFAULT_STEP_TAU = 0.5
# Pairs below this similarity are never aligned (ours): 0 aligns up to min(#pred, #ref) steps, so
# a confidently stated wrong step still counts in MECE.
DEFAULT_MIN_SIM = 0.0
# Open-answer correctness threshold (ours): an alternative phrasing >= 3 annotators gave vs the
# correct choice median 0.60, a wrong choice vs the correct one median 0.38; 0.55 maximises
# balanced accuracy (0.71). Inside "So, the answer is X." a wrong answer still scores median 0.55
# against the right one, so answer steps are judged by their answer (evaluate.py), not by tau.
DEFAULT_ANSWER_TAU = 0.55

AnswerMode = Literal["auto", "choice", "vqa", "similarity", "exact"]


@dataclass(frozen=True)
class AlignedStep:
    """One aligned (predicted, reference) step pair."""

    pred_index: int
    ref_index: int
    similarity: float
    correct: bool


def normalize_step(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed: the key of exact step matching.

    >>> normalize_step("  The red circle is on the LEFT. ")
    'the red circle is on the left'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def step_is_correct(pred: str, refs: list[str], sims: np.ndarray | list[float], tau: float,
                    match: str = "similarity") -> bool:
    """Step correctness, the one definition evaluation (MECE, F1) and the RL rewards (a_t) use.

    ``match="similarity"`` (METHOD.md): ``max_j sims[j] >= tau`` where ``sims[j] = g(pred,
    refs[j])``; ``match="exact"`` (templated worlds, ``Sample.step_match``): the normalised
    ``pred`` equals a normalised reference step (``sims`` unused).
    """
    if match == "exact":
        key = normalize_step(pred)
        return any(normalize_step(r) == key for r in refs)
    if match != "similarity":
        raise ValueError(f"step match must be 'similarity' or 'exact', got {match!r}")
    return bool(len(sims)) and float(np.max(sims)) >= tau


def align_steps(pred_steps: list[str], ref_steps: list[str], similarity: SimilarityModel,
                tau: float = DEFAULT_STEP_TAU, min_sim: float = DEFAULT_MIN_SIM,
                match: str = "similarity") -> list[AlignedStep]:
    """Align predicted steps one-to-one to reference steps by similarity.

    Hungarian assignment (``scipy.optimize.linear_sum_assignment``) maximising
    ``sum g(pred_i, ref_j)`` over the aligned pairs; a pair with ``g < min_sim`` is not aligned,
    and predicted steps left without a partner are dropped. ``correct = g >= tau``
    (``match="exact"``: the normalised texts of the pair are equal; see ``step_is_correct``).
    Returns pairs sorted by predicted index.

    Example (token-Jaccard similarity): pred ["red ball", "blue box"], ref ["a blue box",
    "a red ball"]: g(red ball, a red ball) = 2/3, g(blue box, a blue box) = 2/3, crossings 0, so
    pred 0 -> ref 1 and pred 1 -> ref 0, both correct at tau 0.6.
    """
    if not pred_steps or not ref_steps:
        return []
    from scipy.optimize import linear_sum_assignment

    sims = np.asarray(similarity.pairwise(list(pred_steps), list(ref_steps)), dtype=np.float64)
    expected = (len(pred_steps), len(ref_steps))
    if sims.shape != expected:
        raise ValueError(f"similarity.pairwise returned shape {sims.shape}, expected {expected}")
    rows, cols = linear_sum_assignment(sims, maximize=True)
    pairs = [AlignedStep(int(i), int(j), float(sims[i, j]),
                         step_is_correct(pred_steps[i], [ref_steps[j]], [sims[i, j]], tau, match))
             for i, j in zip(rows, cols, strict=True) if sims[i, j] >= min_sim]
    return sorted(pairs, key=lambda p: p.pred_index)


@dataclass(frozen=True)
class ChainScores:
    """Step-level precision, recall and F1 of one predicted chain against its reference."""

    precision: float
    recall: float
    f1: float
    n_pred: int
    n_ref: int
    n_correct: int


def chain_scores(alignment: list[AlignedStep], n_pred: int, n_ref: int) -> ChainScores:
    """Precision / recall / F1 from an alignment.

    precision = correct predicted steps / predicted steps; recall = reference steps covered by a
    correct aligned step / reference steps (one-to-one, so both numerators equal the number of
    correct pairs M): ``P = M / n_pred``, ``R = M / n_ref``, ``F1 = 2PR / (P + R)`` (0 when
    P + R = 0). An empty prediction scores P = R = F1 = 0. An empty reference raises ValueError
    (recall is undefined; such a sample has no F1).
    """
    if n_ref == 0:
        raise ValueError("the reference chain is empty: step recall and F1 are undefined")
    n_correct = sum(1 for p in alignment if p.correct)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_ref
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return ChainScores(precision, recall, f1, n_pred, n_ref, n_correct)


def chain_f1(pred: list[str], ref: list[str], similarity: SimilarityModel,
             tau: float = DEFAULT_STEP_TAU, min_sim: float = DEFAULT_MIN_SIM) -> ChainScores:
    """Chain F1 of one sample: :func:`align_steps` then :func:`chain_scores`.

    Example: 3 predicted steps, 4 reference steps, 2 aligned pairs with g >= tau:
    P = 2/3, R = 2/4, F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = 4/7.
    """
    return chain_scores(align_steps(pred, ref, similarity, tau, min_sim), len(pred), len(ref))


# --- answers -------------------------------------------------------------------------------------

# Standard VQA answer normalisation (the VQA / A-OKVQA evaluation scripts), compacted.
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't",
                 "cant": "can't", "wont": "won't", "didnt": "didn't", "im": "i'm",
                 "ive": "i've", "youre": "you're", "thats": "that's", "whats": "what's",
                 "wasnt": "wasn't", "werent": "weren't", "hasnt": "hasn't", "havent": "haven't"}


def normalize_vqa_answer(answer: str) -> str:
    """VQA normalisation: lowercase; punctuation removed (commas in numbers kept apart); number
    words zero..ten -> digits; articles dropped; common contractions restored.

    >>> normalize_vqa_answer("The Two Dogs!")
    '2 dogs'
    >>> normalize_vqa_answer("two")
    '2'
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _PERIOD_STRIP.sub("", text).strip().strip("'\u2018\u2019")
    words = [_NUMBERS.get(w, w) for w in text.split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def vqa_soft_accuracy(answer: str, direct_answers: list[str]) -> float:
    """VQA soft accuracy as A-OKVQA scores it: ``min(#{direct answers == answer} / 3, 1)``,
    after :func:`normalize_vqa_answer` on both sides.

    >>> vqa_soft_accuracy("Thirty", ["thirty", "30th", "thirty", "30"])
    0.6666666666666666
    """
    if not direct_answers:
        raise ValueError("VQA soft accuracy needs the direct answers (got none)")
    pred = normalize_vqa_answer(answer)
    matches = sum(1 for da in direct_answers if normalize_vqa_answer(da) == pred)
    return min(matches / 3.0, 1.0)


# "(B)", "(B) nine", "B", "B.", "B) nine", "B: nine" - but not "A dog" (an article).
_LETTER = re.compile(r"^(?:\((?P<a>[A-Z])\)|(?P<b>[A-Z])(?:[.):]|$))\s*(?P<rest>.*)$", re.DOTALL)


def match_choice(answer: str, choices: list[str],
                 similarity: SimilarityModel | None = None) -> tuple[int | None, str]:
    """Map an answer to a choice index: ``(index, how)`` with how in letter / exact / similarity.

    1. a letter ("B", "(B)", "B.", "B) nine") within the choices' range; when text follows the
       letter and exactly names another choice, the text wins;
    2. the VQA-normalised answer equals a normalised choice;
    3. else the choice nearest by similarity (``(None, "none")`` without a similarity model).
    """
    norm_choices = [normalize_vqa_answer(c) for c in choices]
    letter = _LETTER.match(answer.strip())
    if letter is not None:
        index = ord(letter.group("a") or letter.group("b")) - ord("A")
        rest = normalize_vqa_answer(letter.group("rest"))
        if rest in norm_choices:
            return norm_choices.index(rest), "exact"
        if 0 <= index < len(choices):
            return index, "letter"
    norm = normalize_vqa_answer(answer)
    if norm in norm_choices:
        return norm_choices.index(norm), "exact"
    if similarity is None:
        return None, "none"
    sims = np.asarray(similarity.pairwise([answer], list(choices)), dtype=np.float64)[0]
    return int(np.argmax(sims)), "similarity"


@dataclass(frozen=True)
class AnswerJudgement:
    """Correctness of one predicted answer (``score`` in [0, 1]: VQA soft accuracy is graded)."""

    score: float
    method: str
    matched_choice: int | None = None
    similarity: float | None = None


def judge_answer(sample: Sample, answer: str | None, similarity: SimilarityModel | None,
                 answer_tau: float = DEFAULT_ANSWER_TAU, mode: AnswerMode = "auto") -> AnswerJudgement:
    """Score a predicted answer against the sample's gold.

    ``mode="auto"``: multiple choice when the sample has choices and a correct index, else VQA
    soft accuracy when it has direct answers, else similarity to the gold answers (CulturalVQA:
    the answer stated by the reference chain): correct (1) when the normalised answer equals a
    gold answer or ``g(answer, gold) >= answer_tau``. ``mode="exact"``: the normalised match only.
    A sample's own ``answer_mode`` (other than "auto") overrides ``mode="auto"``. A missing answer
    scores 0.
    """
    if answer is None:
        return AnswerJudgement(0.0, "no answer")
    if mode == "auto" and sample.answer_mode != "auto":
        mode = sample.answer_mode
    if mode == "auto":
        if sample.choices and sample.correct_choice_idx is not None:
            mode = "choice"
        elif sample.direct_answers:
            mode = "vqa"
        else:
            mode = "similarity"
    if mode == "choice":
        if not sample.choices or sample.correct_choice_idx is None:
            raise ValueError(f"sample {sample.id}: mode 'choice' needs choices and correct_choice_idx")
        index, how = match_choice(answer, sample.choices, similarity)
        return AnswerJudgement(float(index == sample.correct_choice_idx), f"choice:{how}", index)
    if mode == "vqa":
        return AnswerJudgement(vqa_soft_accuracy(answer, sample.direct_answers), "vqa")
    if mode not in ("similarity", "exact"):
        raise ValueError(f"answer mode must be auto, choice, vqa, similarity or exact, got {mode!r}")
    golds = list(sample.answers) or ([sample.gold_answer] if sample.gold_answer else [])
    if not golds:
        raise ValueError(f"sample {sample.id}: no gold answer (answers empty and the reference "
                         "chain states none)")
    norm = normalize_vqa_answer(answer)
    if any(normalize_vqa_answer(g) == norm for g in golds):
        return AnswerJudgement(1.0, "exact", similarity=1.0)
    if mode == "exact":
        return AnswerJudgement(0.0, "exact")
    if similarity is None:
        raise ValueError(f"sample {sample.id}: open answer needs a similarity model")
    best = float(np.max(similarity.pairwise([answer], golds)))
    return AnswerJudgement(float(best >= answer_tau), "similarity", similarity=best)
