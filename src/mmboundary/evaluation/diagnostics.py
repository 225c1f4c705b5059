"""Where the stated confidence loses the model's signal (issue #12's diagnostics).

``level_agreement(stated, internal)``: for the steps of one system, the confusion matrix of the
level a step *states* against the level of the model's own internal confidence C for that step
(``confidence.InternalConfidenceScorer``, calibrator fitted on that model), Cohen's kappa, and the
share of each stated level (is the model saying the majority level everywhere?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

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
