"""The four step-level internal-confidence estimators (METHOD.md section 2).

Context x = image + prompt + earlier steps; y_1..y_L = a step's content tokens; p_l = the model's
probability of y_l; H_l = the entropy of the full next-token distribution at l. Every number comes
from ONE teacher-forced pass (or the generation's raw logits) over prompt + response: the pipeline
slices each step's tokens out of the response's ``TokenStats``.

Like lm-polygraph's ``estimators/``: each estimator is one small class that says what it reads
(``dependencies``), its sign convention (``uncertainty``: higher = more uncertain, else higher =
more confident) and its paper. The expensive shared statistics (the VLM pass, ONE batched
similarity call for all TokenSAR variants, CLIP image embeddings once per image) are computed once
by ``compute_statistics`` and read by every estimator that needs them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

ESTIMATORS = ("lnlp", "mte", "tokensar", "clips")


class PairedSimilarity(Protocol):
    """The part of ``mmboundary.models.similarity.SimilarityModel`` TokenSAR needs."""

    def paired(self, a: list[str], b: list[str]) -> np.ndarray: ...


class ImageTextCosine(Protocol):
    """The part of ``mmboundary.models.clip.ClipScorer`` CLIPS needs."""

    def cosine(self, images: Sequence[Any], texts: Sequence[str],
               keys: Sequence[str | None] | None = None) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# The formulas: pure functions, numpy in, float out.
# ---------------------------------------------------------------------------------------------


def _nonempty(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-d array of per-token values, "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: per-token values must be finite, got {arr.tolist()}")
    return arr


def length_normalized_perplexity(logprobs: Sequence[float] | np.ndarray) -> float:
    """U_LNLP = exp(-(1/L) * sum_l log p_l): the step's perplexity (uncertainty, >= 1)."""
    lp = _nonempty(logprobs, "lnlp")
    return float(math.exp(-lp.mean()))


def mean_token_entropy(entropies: Sequence[float] | np.ndarray) -> float:
    """U_MTE = (1/L) * sum_l H_l: mean entropy (nats) of the next-token distributions."""
    return float(_nonempty(entropies, "mte").mean())


def token_relevance(similarities: Sequence[float] | np.ndarray) -> np.ndarray:
    """R_l = 1 - g(s, s without y_l), with g clipped to [0, 1] so R_l is in [0, 1]."""
    g = np.clip(_nonempty(similarities, "tokensar similarity"), 0.0, 1.0)
    return 1.0 - g


def token_sar(logprobs: Sequence[float] | np.ndarray,
              similarities: Sequence[float] | np.ndarray) -> float:
    """U_TSAR = sum_l Rn_l * (-log p_l), Rn_l = R_l / sum_k R_k, R_l = 1 - g(s, s without y_l).

    Duan et al. 2024, "Shifting Attention to Relevance" (arXiv:2307.01379). When no token matters
    (sum_k R_k = 0, e.g. every variant judged identical to s) the weights are uniform, so U_TSAR is
    the mean negative log-probability **(ours: the degenerate case)**.
    """
    lp = _nonempty(logprobs, "tokensar")
    relevance = token_relevance(similarities)
    if relevance.shape != lp.shape:
        raise ValueError(f"tokensar: {lp.size} log-probs but {relevance.size} similarities")
    total = relevance.sum()
    weights = relevance / total if total > 0 else np.full(lp.size, 1.0 / lp.size)
    return float(np.sum(weights * -lp))


def clip_score(cosine: float) -> float:
    """U_CLIPS = max(cos(E_image(image), E_text(step)), 0): a confidence (higher = grounded)."""
    if not math.isfinite(cosine):
        raise ValueError(f"clips: cosine must be finite, got {cosine}")
    return max(float(cosine), 0.0)


# ---------------------------------------------------------------------------------------------
# Shared statistics: what one step carries, and the batched computations over many steps.
# ---------------------------------------------------------------------------------------------


@dataclass
class StepInput:
    """One step as the estimators see it.

    ``content`` is the step's content text (no statement); ``token_spans`` are the content tokens'
    character spans relative to ``content``; ``logprobs``/``entropies`` the content tokens' values
    from the single model pass; ``image`` a path or PIL image for CLIPS and ``image_key`` its cache
    key (so an image shared by many steps is embedded once); ``question`` the prompt text (TokenSAR
    with ``include_question``).
    """

    content: str
    logprobs: np.ndarray
    entropies: np.ndarray
    token_spans: list[tuple[int, int]]
    image: Any = None
    question: str | None = None
    image_key: str | None = None


@dataclass
class StepStatistics:
    """Statistics shared by all estimators, one entry per step (lm-polygraph's ``stats``)."""

    logprobs: list[np.ndarray]
    entropies: list[np.ndarray]
    token_similarity: list[np.ndarray] | None = None
    clip_cosine: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_SPACES = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def token_removal_variants(content: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """The L texts "s without y_l": the content with token l's characters cut out.

    Spans are clipped to the content; whitespace is collapsed so removing "▁cat" from
    "a cat sat" gives "a sat". A token with no characters inside the content leaves s unchanged.
    """
    out = []
    for a, b in spans:
        a, b = max(0, min(a, len(content))), max(0, min(b, len(content)))
        out.append(_squash(content[:a] + content[max(a, b):]))
    return out


def tokensar_similarities(steps: Sequence[StepInput], similarity: PairedSimilarity, *,
                          include_question: bool = False) -> list[np.ndarray]:
    """g(s, s without y_l) for every token of every step, in ONE ``similarity.paired`` call.

    s = the step content alone **(ours: default)**, or question + " " + step content when
    ``include_question`` (closer to the original TokenSAR, which scores the whole generation
    in its context). Identical (s, variant) pairs anywhere in the batch (repeated steps, a token
    whose removal leaves s unchanged) are scored once; a bi-encoder then embeds each distinct
    text once, in length-sorted batches (``BiEncoderSimilarity.paired``). Values equal one
    ``paired([s], [variant])`` call per token (tests/test_estimators.py).
    """
    index: dict[tuple[str, str], int] = {}  # distinct (s, variant) pair -> its score's position
    positions: list[int] = []
    lengths: list[int] = []
    for step in steps:
        prefix = f"{_squash(step.question)} " if include_question and step.question else ""
        s = prefix + _squash(step.content)
        variants = token_removal_variants(step.content, step.token_spans)
        positions.extend(index.setdefault((s, prefix + v), len(index)) for v in variants)
        lengths.append(len(variants))
    scores = np.zeros(0, dtype=np.float64)
    if index:
        scores = np.asarray(similarity.paired([p[0] for p in index], [p[1] for p in index]),
                            dtype=np.float64)
        if scores.shape != (len(index),):
            raise ValueError(f"similarity.paired returned shape {scores.shape}, "
                             f"expected ({len(index)},)")
    per_token = scores[np.asarray(positions, dtype=np.int64)]
    return np.split(per_token, np.cumsum(lengths)[:-1]) if lengths else []


def compute_statistics(steps: Sequence[StepInput], needed: set[str], *,
                       similarity: PairedSimilarity | None = None,
                       clip: ImageTextCosine | None = None,
                       include_question: bool = False) -> StepStatistics:
    """Compute once what the enabled estimators read (``needed`` = union of dependencies)."""
    stats = StepStatistics(logprobs=[s.logprobs for s in steps],
                           entropies=[s.entropies for s in steps])
    if "token_similarity" in needed:
        if similarity is None:
            raise ValueError("TokenSAR needs a similarity model (similarity=None was given)")
        stats.token_similarity = tokensar_similarities(steps, similarity,
                                                       include_question=include_question)
    if "clip_cosine" in needed:
        if clip is None:
            raise ValueError("CLIPS needs a CLIP scorer (clip=None was given)")
        missing = [i for i, s in enumerate(steps) if s.image is None]
        if missing:
            raise ValueError(f"CLIPS needs an image for every step; steps {missing} have none")
        cosines = clip.cosine([s.image for s in steps], [s.content for s in steps],
                              keys=[s.image_key for s in steps]) if steps else np.zeros(0)
        stats.clip_cosine = np.asarray(cosines, dtype=np.float64)
    return stats


# ---------------------------------------------------------------------------------------------
# The estimators (lm-polygraph style): name, dependencies, sign convention, __call__(stats).
# ---------------------------------------------------------------------------------------------


class Estimator:
    """Base class: ``__call__(stats) -> np.ndarray`` of one raw score per step."""

    name: str = ""
    uncertainty: bool = True
    dependencies: tuple[str, ...] = ()

    def __call__(self, stats: StepStatistics) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LengthNormalizedPerplexity(Estimator):
    """U_LNLP = exp(-(1/L) sum_l log p_l). Reads: logprobs. Uncertainty (higher = less sure).

    Perplexity of the step's content tokens (lm-polygraph ``Perplexity`` is its log). Paper:
    MMBoundary (He et al., ACL 2025), section 3.1.
    """

    name, uncertainty, dependencies = "lnlp", True, ("logprobs",)

    def __call__(self, stats: StepStatistics) -> np.ndarray:
        return np.array([length_normalized_perplexity(lp) for lp in stats.logprobs])


class MeanTokenEntropy(Estimator):
    """U_MTE = (1/L) sum_l H_l. Reads: entropies. Uncertainty (higher = less sure).

    Mean entropy of the full next-token distributions over the step's content tokens
    (lm-polygraph ``MeanTokenEntropy``; Malinin & Gales 2021). Paper: MMBoundary section 3.1.
    """

    name, uncertainty, dependencies = "mte", True, ("entropies",)

    def __call__(self, stats: StepStatistics) -> np.ndarray:
        return np.array([mean_token_entropy(h) for h in stats.entropies])


class TokenSAR(Estimator):
    """U_TSAR = sum_l Rn_l (-log p_l), R_l = 1 - g(s, s without y_l). Uncertainty.

    Reads: logprobs, token_similarity (one batched similarity call, ``tokensar_similarities``).
    Paper: Duan et al. 2024 (arXiv:2307.01379); lm-polygraph ``TokenSAR``.
    """

    name, uncertainty, dependencies = "tokensar", True, ("logprobs", "token_similarity")

    def __call__(self, stats: StepStatistics) -> np.ndarray:
        if stats.token_similarity is None:
            raise ValueError("TokenSAR: statistics lack token_similarity")
        return np.array([token_sar(lp, g) for lp, g in
                         zip(stats.logprobs, stats.token_similarity, strict=True)])


class CLIPScore(Estimator):
    """U_CLIPS = max(cos(E_image, E_text(step)), 0). Reads: clip_cosine. A CONFIDENCE.

    Hessel et al. 2021, "CLIPScore" (without its 2.5 rescaling, which a normaliser absorbs).
    """

    name, uncertainty, dependencies = "clips", False, ("clip_cosine",)

    def __call__(self, stats: StepStatistics) -> np.ndarray:
        if stats.clip_cosine is None:
            raise ValueError("CLIPScore: statistics lack clip_cosine")
        return np.array([clip_score(c) for c in stats.clip_cosine])


ESTIMATOR_CLASSES: dict[str, type[Estimator]] = {
    "lnlp": LengthNormalizedPerplexity,
    "mte": MeanTokenEntropy,
    "tokensar": TokenSAR,
    "clips": CLIPScore,
}


def is_uncertainty(name: str) -> bool:
    """Whether estimator ``name`` is an uncertainty (to be flipped into a confidence)."""
    return get_estimators([name])[0].uncertainty


def get_estimators(names: Sequence[str]) -> list[Estimator]:
    """Instantiate estimators by name ("lnlp", "mte", "tokensar", "clips")."""
    unknown = [n for n in names if n not in ESTIMATOR_CLASSES]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; expected a subset of {list(ESTIMATORS)}")
    return [ESTIMATOR_CLASSES[n]() for n in names]


def estimate(steps: Sequence[StepInput], names: Sequence[str] = ESTIMATORS, *,
             similarity: PairedSimilarity | None = None, clip: ImageTextCosine | None = None,
             include_question: bool = False) -> dict[str, np.ndarray]:
    """Raw scores ``{name: array[len(steps)]}`` of the named estimators, statistics shared."""
    estimators = get_estimators(names)
    needed = {d for e in estimators for d in e.dependencies}
    stats = compute_statistics(steps, needed, similarity=similarity, clip=clip,
                               include_question=include_question)
    return {e.name: e(stats) for e in estimators}
