"""Stage 2 rewards (METHOD.md section 6): R_KA, R_EC and R_CS over whole completions.

Per completion with steps t = 1..T (one sentence each, ``parse_steps``):

- e_t: expressed confidence, the value of the step's confidence statement; a step without one
  counts 0.5 and lowers the format score;
- a_t: step correctness from the one rule set evaluation uses (``judging.rules.StepRules``):
  METHOD.md's ``max_j g(step_t, ref_j) >= tau`` becomes **(ours)** a one-to-one alignment to the
  reference chain, each aligned pair decided by the dataset's step judge (``assertions`` by
  default, ``similarity`` = the paper's rule, ``exact`` for templated worlds), the answer step by
  its answer, an unaligned step 0;
- i_t: internal confidence (sections 2-3) on the statements' scale: the level value (2k - 1) / 10
  of the step's fused C (``confidence.InternalConfidenceScorer``), with the calibrator fitted on
  the scoring model; scored by the frozen warm-up model by default **(ours)** or by the policy
  being trained (the paper's figure);
- ans: 1 if the final answer ("So, the answer is X") is correct, else 0.

The per-step values are computed ONCE per completion by a ``training.step_analysis.StepAnalyzer``
and shared by the
three reward functions, which have TRL's reward shape ``(completions, **columns) -> list[float]``
(bind the analyzer with ``functools.partial``; TRL names the reward after the wrapped function).
Malformed text never raises: an empty completion, a completion without an answer step or without
statements scores low, and the reason is logged through TRL's ``log_extra`` column
``mmb/problems``. ``None`` is returned where correctness is unknown (no gold answer or no reference
chain), as TRL's ``brier_score_reward`` does; TRL ignores ``None`` in the weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmboundary.training.step_analysis import StepAnalyzer

# ---------------------------------------------------------------------------------------------
# The math: pure functions, numbers in, numbers out.
# ---------------------------------------------------------------------------------------------
def knowledge_accuracy(answer_correct: float, step_correct: Sequence[float]) -> float:
    """R_KA = 0.5 * ans + 0.5 * mean_t a_t **(ours: the form)**; mean over no steps = 0.

    >>> knowledge_accuracy(1.0, [1, 0])
    0.75
    """
    mean_a = float(np.mean(step_correct)) if len(step_correct) else 0.0
    return 0.5 * float(answer_correct) + 0.5 * mean_a


def expected_calibration(expressed: Sequence[float], step_correct: Sequence[float]) -> float:
    """R_EC = 1 - mean_t (e_t - a_t)^2 **(ours: the form)**, a step-level Brier score.

    No steps scores 0 (nothing to calibrate is the worst outcome, never a free 1).

    >>> expected_calibration([0.9, 0.3], [1, 0])
    0.95
    """
    if not len(expressed):
        return 0.0
    e, a = np.asarray(expressed, float), np.asarray(step_correct, float)
    return float(round(1.0 - np.mean((e - a) ** 2), 12))


#: forms of R_CS's distance (``RLConfig.cs_form``; ours): ``abs`` = 1 - mean_t |e_t - i_t| (METHOD.md
#: section 6), ``squared`` = 1 - mean_t (e_t - i_t)^2
CS_FORMS = ("abs", "squared")


def cs_distance(expressed: Any, internal: Any, form: str = "abs") -> Any:
    """|e - i| (``abs``) or (e - i)^2 (``squared``), elementwise: R_CS's per-step distance.

    Which one decides what a policy that cannot tell i_t exactly is paid to state: the
    expectation of ``abs`` is smallest at the median of i_t given what it can tell (for levels
    spread around the middle, the middle level, whatever the spread), that of ``squared`` at the
    mean (README, "Where the probe teacher's accuracy goes").

    >>> cs_distance(0.9, 0.5), round(cs_distance(0.9, 0.5, "squared"), 6)
    (0.4, 0.16)
    """
    if form not in CS_FORMS:
        raise ValueError(f"R_CS form: expected one of {CS_FORMS}, got {form!r}")
    d = np.abs(np.asarray(expressed, float) - np.asarray(internal, float))
    out = d if form == "abs" else d ** 2
    return float(out) if out.ndim == 0 else out


def confidence_self_calibration(expressed: Sequence[float], internal: Sequence[float],
                                form: str = "abs") -> float:
    """R_CS = 1 - mean_t |e_t - i_t| **(ours: the form)**, or 1 - mean_t (e_t - i_t)^2 with
    ``form="squared"`` (``cs_distance``); no steps scores 0.

    e_t and i_t must be on one scale (METHOD.md section 6): e_t is a stated level's value
    (2k - 1) / 10, so i_t is the level value of the internal confidence, not the raw fused C.
    Against a raw C, which a real model concentrates in a narrow band, always stating the middle
    level would beat stating the taught levels.

    Steps whose i_t is NaN (no content token to score) are left out of the mean; NaN when no
    step has an i_t.

    >>> confidence_self_calibration([0.9, 0.5], [0.7, 0.5])
    0.9
    >>> confidence_self_calibration([0.9, 0.5], [0.7, 0.5], form="squared")  # 1 - 0.04 / 2
    0.98
    """
    if not len(expressed):
        return 0.0
    e, i = np.asarray(expressed, float), np.asarray(internal, float)
    known = np.isfinite(i)
    if not known.any():
        return float("nan")
    return float(round(1.0 - np.mean(cs_distance(e[known], i[known], form)), 12))


def correctness_incentive(alpha: float, beta: float, expressed: float, steps: int) -> float:
    """What R = alpha R_KA + beta R_EC gains when one non-answer step of ``steps`` turns from
    wrong to right with its statement (value ``expressed``) unchanged; R_CS does not see a_t.

    R_KA's step term adds 0.5 / T, R_EC's Brier term adds (e^2 - (1 - e)^2) / T = (2e - 1) / T,
    so the gain is (0.5 alpha + beta (2e - 1)) / T. It is negative for e < 0.5 - alpha / (4 beta):
    at the paper's weights (1, 1) a step stated at level 1 (0.1) earns 0.3 / T more when it is
    wrong, so the policy is paid to make its "just a guess" steps wrong. alpha >= 1.6 beta keeps
    the gain >= 0 at every level value (e >= 0.1). (A consequence of our forms of R_KA and R_EC.)

    >>> round(correctness_incentive(1.0, 1.0, 0.1, 2), 6), round(correctness_incentive(2.0, 1.0, 0.1, 2), 6)
    (-0.15, 0.1)
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return (0.5 * alpha + beta * (2.0 * expressed - 1.0)) / steps


def format_score(has_statement: Sequence[bool], has_answer: bool) -> float:
    """Format = 0.5 * (share of steps with a statement) + 0.5 * [an answer step exists] **(ours)**.

    >>> format_score([True, False], has_answer=True)
    0.75
    """
    if not len(has_statement):
        return 0.0
    return 0.5 * float(np.mean(has_statement)) + 0.5 * float(has_answer)


# ---------------------------------------------------------------------------------------------
# The reward functions, in TRL's shape. Bind the analyzer: partial(fn, analyzer=analyzer).
# ---------------------------------------------------------------------------------------------
def knowledge_accuracy_reward(completions: list, sample: list, *, analyzer: StepAnalyzer,
                              image: list | None = None, trainer_state: Any = None,
                              log_extra: Callable | None = None,
                              log_metric: Callable | None = None,
                              **kwargs: Any) -> list[float | None]:
    """R_KA = 0.5 * ans + 0.5 * mean_t a_t (knowledge accuracy, METHOD.md section 6).

    ans = 1 if the final "So, the answer is X" is correct (0 when there is no answer step; VQA
    soft accuracy is graded); a_t = the rule set's step verdict (module docstring). An empty
    completion scores 0. ``None`` when the
    sample has no gold answer or no reference chain (correctness unknown).

    Args:
        completions: TRL completions (strings or ``[{"role": "assistant", "content": ...}]``).
        sample: the dataset column ``sample``: each row's :class:`Sample` as JSON.
        analyzer: the shared :class:`StepAnalyzer`.
        image, trainer_state, log_extra, log_metric: passed by TRL; optional outside a trainer.

    Example:
    >>> from mmboundary.data.schema import ReferenceChain, Sample
    >>> from mmboundary.training.step_analysis import StepAnalyzer
    >>> class Same:  # 1 for the same sentence (final dot ignored): a stand-in for MiniLM
    ...     def pairwise(self, a, b):
    ...         return np.array([[float(x.strip(".") == y.strip(".")) for y in b] for x in a])
    >>> s = Sample(id="s1", dataset="toy", question="How many circles?", answers=["2"],
    ...            reference=ReferenceChain(image_level=["There are two circles."],
    ...                                     reasoning_level=["So, the answer is 2."]))
    >>> good = "There are two circles, with total certainty. So, the answer is 2, and I believe this is right."
    >>> bad = "There are three squares, with total certainty. So, the answer is 3, with total certainty."
    >>> knowledge_accuracy_reward([good, bad], [s.model_dump_json()] * 2,
    ...                           analyzer=StepAnalyzer(similarity=Same()))
    [1.0, 0.0]
    """
    analyses = analyzer.analyze(completions, sample, image=image, trainer_state=trainer_state,
                                log_extra=log_extra, log_metric=log_metric)
    return [None if a.answer_correct is None or a.step_correct is None
            else knowledge_accuracy(a.answer_correct, a.step_correct) for a in analyses]


def expected_calibration_reward(completions: list, sample: list, *, analyzer: StepAnalyzer,
                                image: list | None = None, trainer_state: Any = None,
                                log_extra: Callable | None = None,
                                log_metric: Callable | None = None,
                                **kwargs: Any) -> list[float | None]:
    """R_EC = 1 - mean_t (e_t - a_t)^2 (expected calibration, METHOD.md section 6).

    The step-level generalisation of TRL's response-level ``brier_score_reward`` (RLCR,
    1 - (confidence - correctness)^2): one Brier term per reasoning step, e_t the step's
    expressed confidence (0.5 without a statement), a_t its correctness. An empty completion
    scores 0; ``None`` when the sample has no reference chain. Arguments as
    :func:`knowledge_accuracy_reward`.

    Example (``Same``, ``s``, ``good``, ``bad`` as in :func:`knowledge_accuracy_reward`):
    >>> from mmboundary.data.schema import ReferenceChain, Sample
    >>> from mmboundary.training.step_analysis import StepAnalyzer
    >>> class Same:
    ...     def pairwise(self, a, b):
    ...         return np.array([[float(x.strip(".") == y.strip(".")) for y in b] for x in a])
    >>> s = Sample(id="s1", dataset="toy", question="How many circles?", answers=["2"],
    ...            reference=ReferenceChain(image_level=["There are two circles."],
    ...                                     reasoning_level=["So, the answer is 2."]))
    >>> good = "There are two circles, with total certainty. So, the answer is 2, and I believe this is right."
    >>> bad = "There are three squares, with total certainty. So, the answer is 3, with total certainty."
    >>> rewards = expected_calibration_reward([good, bad, ""], [s.model_dump_json()] * 3,
    ...                                       analyzer=StepAnalyzer(similarity=Same()))
    >>> [round(r, 3) for r in rewards]  # 1-(0.01+0.09)/2, 1-(0.81+0.81)/2, empty
    [0.95, 0.19, 0.0]
    """
    analyses = analyzer.analyze(completions, sample, image=image, trainer_state=trainer_state,
                                log_extra=log_extra, log_metric=log_metric)
    return [None if a.step_correct is None else expected_calibration(a.expressed, a.step_correct)
            for a in analyses]


def confidence_self_calibration_reward(completions: list, sample: list, *,
                                       analyzer: StepAnalyzer, image: list | None = None,
                                       trainer_state: Any = None,
                                       log_extra: Callable | None = None,
                                       log_metric: Callable | None = None,
                                       form: str = "abs", **kwargs: Any) -> list[float | None]:
    """R_CS = 1 - mean_t |e_t - i_t| (confidence self-calibration, METHOD.md section 6; ``form``
    "squared": 1 - mean_t (e_t - i_t)^2, ``RLConfig.cs_form``).

    e_t = expressed confidence (0.5 without a statement), i_t = internal confidence from the
    analyzer's scorer (``confidence.InternalConfidenceScorer``: the level value (2k - 1) / 10 of
    the frozen warm-up model's fused C by default **(ours)**), so both sit on the five level
    values. What it is not: a reward for being right (that is R_KA / R_EC); a model that states
    exactly its own internal level scores 1 however wrong it is. An empty completion scores 0.
    Arguments as :func:`knowledge_accuracy_reward`; the analyzer must have an ``internal`` scorer.

    Example with a scorer that puts every step at level 4 (value 0.7):
    >>> from mmboundary.data.schema import Sample
    >>> from mmboundary.training.step_analysis import StepAnalyzer
    >>> s = Sample(id="s1", dataset="toy", question="How many circles?")
    >>> flat = lambda samples, images, texts, steps: [[0.7] * len(st) for st in steps]
    >>> text = "There are two circles, with total certainty. So, the answer is 2."
    >>> r = confidence_self_calibration_reward([text], [s.model_dump_json()],
    ...         analyzer=StepAnalyzer(similarity=None, internal=flat))
    >>> round(r[0], 3)  # 1 - (|0.9-0.7| + |0.5-0.7|) / 2
    0.8
    """
    if analyzer.internal is None:
        raise ValueError("confidence_self_calibration_reward needs StepAnalyzer(internal=...): "
                         "an internal-confidence scorer (or turn R_CS off: weight gamma = 0)")
    analyses = analyzer.analyze(completions, sample, image=image, trainer_state=trainer_state,
                                log_extra=log_extra, log_metric=log_metric)
    scores = [None if a.internal is None
              else confidence_self_calibration(a.expressed, a.internal, form) for a in analyses]
    return [None if r is None or math.isnan(r) else r for r in scores]


def format_reward(completions: list, sample: list, *, analyzer: StepAnalyzer,
                  image: list | None = None, trainer_state: Any = None,
                  log_extra: Callable | None = None, log_metric: Callable | None = None,
                  **kwargs: Any) -> list[float]:
    """Format = 0.5 * share of steps with a statement + 0.5 * [answer step] **(ours)**.

    Off by default (weight 0): R_EC and R_CS already pull e_t away from the 0.5 of a missing
    statement. Useful for RL from the vanilla model (DRL), which rarely writes statements.

    >>> from mmboundary.data.schema import Sample
    >>> from mmboundary.training.step_analysis import StepAnalyzer
    >>> s = Sample(id="s1", dataset="toy", question="How many circles?").model_dump_json()
    >>> format_reward(["There are two circles, with total certainty. So, the answer is 2.", ""],
    ...               [s, s], analyzer=StepAnalyzer(similarity=None))
    [0.75, 0.0]
    """
    analyses = analyzer.analyze(completions, sample, image=image, trainer_state=trainer_state,
                                log_extra=log_extra, log_metric=log_metric)
    return [a.format for a in analyses]
