"""The two simple judges: similarity above a threshold (METHOD.md, the paper's rule) and exact
normalised match (templated worlds such as ShapesWorld)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from mmboundary.judging.base import JudgeItem, StepVerdict, register_judge
from mmboundary.models.similarity import SimilarityModel

# Step-correctness threshold on g = max(cos, 0) of all-MiniLM-L6-v2 (ours). Measured on 400
# A-OKVQA val questions: a human rationale's best match in its own reference chain median 0.64,
# in another question's chain median 0.13. Two different steps of one chain already score median
# 0.59, so similarity cannot tell "same fact" from "same topic": it is the paper's rule and a
# baseline judge here, and the aligner's score, not the default judge on real chains.
DEFAULT_STEP_TAU = 0.5


def normalize_step(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed: the key of exact step matching.

    >>> normalize_step("  The red circle is on the LEFT. ")
    'the red circle is on the left'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class UsesSimilarity:
    """Mixin: ``self.similarity`` is the model given to the constructor (``self._similarity``),
    else the offline all-MiniLM-L6-v2, loaded on first use."""

    _similarity: SimilarityModel | None = None

    @property
    def similarity(self) -> SimilarityModel:
        if self._similarity is None:
            from mmboundary.models.similarity import default_similarity

            self._similarity = default_similarity()
        return self._similarity


@register_judge("similarity")
class SimilarityJudge(UsesSimilarity):
    """Correct when ``g(pred, ref) >= tau`` (METHOD.md section 6/7; the paper's rule).

    It reads ``JudgeItem.similarity`` when the aligner filled it, else calls ``similarity``
    (default: the offline all-MiniLM-L6-v2) once for the whole batch. What it is not: a test of
    truth. "a large red umbrella" vs "a small red umbrella" scores ~0.95.
    """

    name = "similarity"

    def __init__(self, similarity: SimilarityModel | None = None,
                 tau: float = DEFAULT_STEP_TAU) -> None:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"similarity judge: tau must be in [0, 1], got {tau}")
        self.tau = tau
        self._similarity = similarity

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]:
        todo = [i for i, it in enumerate(items) if it.similarity is None]
        sims = [it.similarity for it in items]
        if todo:
            fresh = np.asarray(self.similarity.paired([items[i].pred for i in todo],
                                                      [items[i].ref for i in todo]))
            for i, value in zip(todo, fresh, strict=True):
                sims[i] = float(value)
        return [StepVerdict(bool(s >= self.tau), float(s), f"g={s:.3f} vs tau {self.tau}")
                for s in sims]


@register_judge("exact")
class ExactJudge:
    """Correct when the normalised texts are equal (:func:`normalize_step`); score 1 or 0.

    For templated chains (ShapesWorld) where a sentence encoder scores "to the left of" and "to
    the right of" at 0.99.
    """

    name = "exact"

    def __init__(self, **_: object) -> None:
        pass

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]:
        out = []
        for it in items:
            same = normalize_step(it.pred) == normalize_step(it.ref)
            out.append(StepVerdict(same, float(same), "same text" if same else "text differs"))
        return out
