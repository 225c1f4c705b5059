"""Where the stated confidence loses the model's signal (issue #12's diagnostics).

``level_agreement(stated, internal)``: for the steps of one system, the confusion matrix of the
level a step *states* against the level of the model's own internal confidence C for that step
(``confidence.InternalConfidenceScorer``, calibrator fitted on that model), Cohen's kappa, and the
share of each stated level (is the model saying the majority level everywhere?).
``stated_vs_internal(scorer, samples, responses)`` computes it for a model's responses;
``agreement_table`` shows it. The linear probe is in :mod:`mmboundary.evaluation.probe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmboundary.confidence.fusion import Fusion
from mmboundary.data.schema import Response, Sample
from mmboundary.evaluation.tables import Table, fmt_value

LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class LevelAgreement:
    """``confusion[i][j]`` = steps stating level i+1 whose internal level is j+1."""

    confusion: list[list[int]]
    kappa: float | None
    exact: float
    within_one: float
    stated_share: dict[int, float]
    internal_share: dict[int, float]
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def level_agreement(stated: Sequence[int], internal: Sequence[int]) -> LevelAgreement:
    """Confusion, Cohen's kappa (``sklearn.metrics.cohen_kappa_score``; None when one side says
    a single level), exact and within-one agreement, level shares.

    >>> a = level_agreement([3, 3, 4, 2], [3, 4, 4, 1])
    >>> a.exact, a.within_one, a.stated_share[3]
    (0.5, 1.0, 0.5)
    """
    s, i = np.asarray(stated, dtype=int), np.asarray(internal, dtype=int)
    if s.shape != i.shape or s.size == 0:
        raise ValueError(f"level_agreement: {s.size} stated and {i.size} internal levels "
                         "(need the same, non-zero number)")
    bad = [int(v) for v in np.concatenate([s, i]) if v not in LEVELS]
    if bad:
        raise ValueError(f"level_agreement: levels must be 1..5, got {bad[:3]}")
    confusion = [[int(np.sum((s == a) & (i == b))) for b in LEVELS] for a in LEVELS]
    kappa = None
    if len(set(s.tolist())) > 1 and len(set(i.tolist())) > 1:
        from sklearn.metrics import cohen_kappa_score

        kappa = float(cohen_kappa_score(s, i, labels=list(LEVELS)))
    share = lambda x: {k: float(np.mean(x == k)) for k in LEVELS}  # noqa: E731
    return LevelAgreement(confusion, kappa, float(np.mean(s == i)),
                          float(np.mean(np.abs(s - i) <= 1)), share(s), share(i), int(s.size))


def paired_levels(scored: Sequence[Response]) -> tuple[list[int], list[int]]:
    """(stated level, internal level) of every step that has both, over responses scored by
    ``confidence.InternalConfidenceScorer.score`` (whose parser set each step's statement and
    whose calibrator set its level); failed responses are left out."""
    from mmboundary.text import value_to_level

    stated: list[int] = []
    internal: list[int] = []
    for response in scored:
        if "error" in response.meta:
            continue
        for step in response.steps:
            if step.expressed_confidence is not None and step.level is not None:
                stated.append(value_to_level(step.expressed_confidence))
                internal.append(step.level)
    return stated, internal


def stated_vs_internal(scorer: Any, samples: Sequence[Sample],
                       responses: Sequence[Response]) -> LevelAgreement:
    """Stated level vs internal level over the steps of one model's ``responses`` (one per
    sample; failed ones skipped): ``scorer`` (``InternalConfidenceScorer``) re-reads each
    response with its model and calibrator and parses its statements with its parser (the one
    ``StatementParser``), so both levels belong to the same step."""
    by_id = {s.id: s for s in samples}
    usable = [r for r in responses if "error" not in r.meta and r.text.strip()]
    scored = scorer.score([by_id[r.sample_id] for r in usable], [r.text for r in usable])
    stated, internal = paired_levels(scored)
    if not stated:
        raise ValueError(f"stated_vs_internal: none of {len(usable)} responses has a step with "
                         "both a statement and an internal level")
    return level_agreement(stated, internal)


def agreement_table(name: str, agreement: LevelAgreement | dict[str, Any]) -> Table:
    """The confusion matrix (rows: stated level, columns: internal level) with each level's
    share, and kappa / exact / within-one agreement in the caption."""
    a = agreement if isinstance(agreement, dict) else agreement.to_dict()
    header = ["", *(f"internal {k}" for k in LEVELS), "stated share"]
    if "error" in a:  # nothing to compare (e.g. no step states a level)
        return Table(f"Stated vs internal level: {name}", f"Not computed: {a['error']}.",
                     header, [])
    share = lambda d, k: fmt_value(d.get(k, d.get(str(k))))  # noqa: E731 - JSON keys are text
    rows = [[f"stated {k}", *map(str, a["confusion"][k - 1]), share(a["stated_share"], k)]
            for k in LEVELS]
    rows.append(["internal share", *(share(a["internal_share"], k) for k in LEVELS), ""])
    return Table(f"Stated vs internal level: {name}",
                 f"{a['n']} steps with a statement; Cohen's kappa {fmt_value(a['kappa'])}, exact "
                 f"agreement {fmt_value(a['exact'])}, within one level "
                 f"{fmt_value(a['within_one'])}. Rows: the level the step states; columns: the "
                 "level of the internal confidence C of that step.", header, rows)


def estimator_table(discrimination: dict[str, float | None],
                    fusion: dict[str, Any] | None = None) -> Table:
    """What each internal estimator, and the fused C, tells on the steps the warm-up's calibrator
    was fitted on (``ConfidenceCalibrator.discrimination_``), with its share of C
    (``Fusion.shares``; n/a for max pooling). ``fusion``: ``Fusion.to_dict()`` (default: mean)."""
    fuser = Fusion.from_dict(fusion or {"method": "mean"})
    names = [k for k in discrimination if k != "fused"]
    shares = fuser.shares(names) or {}
    rows = [[name, fmt_value(discrimination[name]), fmt_value(shares.get(name))] for name in names]
    rows.append([f"fused C ({fuser.method})", fmt_value(discrimination.get("fused")), ""])
    return Table("What each internal estimator tells (the warm-up's train steps)",
                 "Step AUROC of each normalised confidence for the step's correctness (judged by "
                 "the rule set against the train references) on the vanilla model's answers the "
                 "warm-up calibrator was fitted on, and its weight in the fused C. Below .5 an "
                 "estimator ranks wrong steps above right ones.",
                 ["Confidence", "Step AUROC", "Fusion weight"], rows)


@dataclass(frozen=True)
class ContentChange:
    """How a trained model's chains differ from the model it was trained from, content only.

    ``kept``: share of questions whose chain content (every step with its statement removed by
    the one parser, joined) equals the base model's; on the questions where it changed, the base
    model's and the trained model's answer accuracy, and how many answers turned right / wrong.
    Where accuracy goes when it goes: into the changed chains, or into the kept ones."""

    n: int
    kept: float
    kept_accuracy: float | None
    changed_accuracy: float | None
    changed_base_accuracy: float | None
    turned_right: int
    turned_wrong: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_change(rules: Any, parser: Any, samples: Sequence[Sample],
                   base: Sequence[Response], trained: Sequence[Response]) -> ContentChange:
    """Compare the trained model's answers with the base model's, question by question (both in
    ``samples`` order; a failed answer on either side leaves the question out). Answers are
    judged by the one rule set (``judging.StepRules``).

    >>> from mmboundary.judging.rules import StepRules, RuleConfig
    >>> from mmboundary.text import default_parser
    >>> from mmboundary.data.schema import ReferenceChain
    >>> s = Sample(id="q", dataset="d", question="How many?", answers=["2"], answer_mode="exact",
    ...            reference=ReferenceChain(image_level=[], reasoning_level=["So, the answer is 2."]))
    >>> base = [Response(sample_id="q", text="There are 2. So, the answer is 2.")]
    >>> new = [Response(sample_id="q", text="There are 3, but I'm not sure. So, the answer is 3.")]
    >>> c = content_change(StepRules(RuleConfig(judge="exact")), default_parser(), [s], base, new)
    >>> c.kept, c.changed_base_accuracy, c.changed_accuracy, c.turned_wrong
    (0.0, 1.0, 0.0, 1)
    >>> same = [Response(sample_id="q", text="There are 2, but I'm not sure. So, the answer is 2.")]
    >>> c = content_change(StepRules(RuleConfig(judge="exact")), default_parser(), [s], base, same)
    >>> c.kept, c.kept_accuracy, c.changed_accuracy
    (1.0, 1.0, None)
    """
    if not len(samples) == len(base) == len(trained):
        raise ValueError(f"content_change: {len(samples)} samples, {len(base)} base and "
                         f"{len(trained)} trained answers (need one each)")
    ok = [k for k in range(len(samples))
          if "error" not in base[k].meta and "error" not in trained[k].meta]
    if not ok:
        raise ValueError("content_change: no question with an answer from both models")
    chosen = [samples[k] for k in ok]
    chains = {}
    for side, answers in (("base", base), ("trained", trained)):
        steps = parser.parse_many([answers[k].text for k in ok])
        chains[side] = (steps, rules.judge_chains(chosen, steps))
    kept, right = [], {"base": [], "trained": []}
    for i in range(len(ok)):
        content = [" ".join(s.content.strip().rstrip(".!?;:, ") for s in chains[side][0][i])
                   for side in ("base", "trained")]  # a step's final stop goes with a statement
        kept.append(content[0] == content[1])
        for side in right:
            right[side].append(bool(chains[side][1][i].answer_correct))
    kept_a, base_a, new_a = np.array(kept), np.array(right["base"]), np.array(right["trained"])
    mean = lambda x: float(x.mean()) if x.size else None  # noqa: E731
    return ContentChange(n=len(ok), kept=float(kept_a.mean()), kept_accuracy=mean(new_a[kept_a]),
                         changed_accuracy=mean(new_a[~kept_a]),
                         changed_base_accuracy=mean(base_a[~kept_a]),
                         turned_right=int(np.sum(new_a & ~base_a)),
                         turned_wrong=int(np.sum(~new_a & base_a)))


def content_table(split: str, changes: dict[str, dict[str, Any]]) -> Table:
    """One row per trained model: its chains against the vanilla model's, content only."""
    header = ["Model", "Questions", "Content kept", "Acc (kept)", "Acc (changed)",
              "Vanilla acc (changed)", "Turned right", "Turned wrong"]
    rows = [[label, str(c["n"]), fmt_value(c["kept"]), fmt_value(c["kept_accuracy"]),
             fmt_value(c["changed_accuracy"]), fmt_value(c["changed_base_accuracy"]),
             str(c["turned_right"]), str(c["turned_wrong"])]
            for label, c in changes.items() if "error" not in c]
    return Table(f"Chain content vs the vanilla model ({split} split)",
                 "Content = every step with its statement removed; kept = the same chain as the "
                 "vanilla model's greedy answer. Where answer accuracy is lost: in the chains "
                 "training changed (their vanilla accuracy vs now), or not at all.", header, rows)
