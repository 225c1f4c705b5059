"""Answer correctness: the answer judges the rule set (:mod:`mmboundary.judging.rules`) uses.

- :func:`judge_answer`: multiple choice (letter, normalised text, or similarity above a threshold
  with a margin over the runner-up), VQA soft accuracy over direct answers, or similarity /
  exact match to the gold answer (open questions).
- :func:`match_choice`, :func:`vqa_soft_accuracy`, :func:`normalize_vqa_answer`.

Step alignment and step correctness live in :mod:`mmboundary.judging` (one rule set).
Thresholds (**ours**, measured with all-MiniLM-L6-v2 on the authors' A-OKVQA val file by
``examples/measure_similarity_thresholds.py`` and ``examples/measure_choice_threshold.py``; see
the constants below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmboundary.data.schema import Sample
from mmboundary.models.similarity import SimilarityModel

# Open-answer correctness threshold (ours): an alternative phrasing >= 3 annotators gave vs the
# correct choice median 0.60, a wrong choice vs the correct one median 0.38; 0.55 maximises
# balanced accuracy (0.71). Inside "So, the answer is X." a wrong answer still scores median 0.55
# against the right one, so answer steps are judged by their answer, not by a step threshold.
DEFAULT_ANSWER_TAU = 0.55
# Strict multiple-choice matching (ours), measured on the 1145 A-OKVQA val questions with choices
# (examples/measure_choice_threshold.py): positives = 587 free answers >= 3 annotators gave that
# equal no choice text (the correct choice is even the nearest for only 73% of them); negatives =
# 1151 other questions' correct answers. Nearest choice without a threshold maps every negative to
# some choice (~25% to the correct one). At g >= 0.50 with a margin >= 0.10 over the runner-up,
# 51.6% of the positives map to the correct choice (71% of those whose nearest is correct) and
# 1.7% of the negatives map to any choice (0.5% to the correct one). The margin is what rejects a
# colour that is not among the choices: "purple" vs red/green/yellow/blue scores 0.748 for blue,
# 0.668 for red.
DEFAULT_CHOICE_TAU = 0.50
DEFAULT_CHOICE_MARGIN = 0.10

AnswerMode = Literal["auto", "choice", "vqa", "similarity", "exact"]


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


def match_choice(answer: str, choices: list[str], similarity: SimilarityModel | None = None,
                 tau: float = DEFAULT_CHOICE_TAU,
                 margin: float = DEFAULT_CHOICE_MARGIN) -> tuple[int | None, str]:
    """Map an answer to a choice index: ``(index, how)`` with how in letter / exact / similarity,
    or ``(None, "none")`` when it names no choice (then it is wrong).

    1. a letter ("B", "(B)", "B.", "B) nine") within the choices' range; when text follows the
       letter and exactly names another choice, the text wins;
    2. the VQA-normalised answer equals a normalised choice;
    3. the nearest choice by similarity, only when ``g >= tau`` and ``g - g_runner_up >= margin``
       **(ours: the strict judge; without the threshold "purple" and "navy" would be "blue")**.
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
    order = np.argsort(-sims)
    best = float(sims[order[0]])
    runner_up = float(sims[order[1]]) if len(order) > 1 else 0.0
    if best >= tau and best - runner_up >= margin:
        return int(order[0]), "similarity"
    return None, "none"


@dataclass(frozen=True)
class AnswerJudgement:
    """Correctness of one predicted answer (``score`` in [0, 1]: VQA soft accuracy is graded)."""

    score: float
    method: str
    matched_choice: int | None = None
    similarity: float | None = None


def judge_answer(sample: Sample, answer: str | None, similarity: SimilarityModel | None,
                 answer_tau: float = DEFAULT_ANSWER_TAU, mode: AnswerMode = "auto", *,
                 choice_tau: float = DEFAULT_CHOICE_TAU,
                 choice_margin: float = DEFAULT_CHOICE_MARGIN) -> AnswerJudgement:
    """Score a predicted answer against the sample's gold.

    The one answer judge (called through :class:`mmboundary.judging.rules.StepRules`).
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
        index, how = match_choice(answer, sample.choices, similarity, choice_tau, choice_margin)
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
