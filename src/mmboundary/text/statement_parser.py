"""Confidence statements parsed back to values (METHOD.md section 4): ``StatementParser``.

statement -> value (paper: sentence encoder + cosine): an exact bank match first, else the step's
candidate trailing clauses are embedded and the nearest bank statement by cosine gives the level;
a best cosine below ``threshold`` means the step states nothing. ``mode="numeric"`` (the
"w/o S-S mapping" ablation, ours) reads "(confidence 0.7)" back. The bank, levels and insertion
are in ``text.statements``, which also serves this module's public names.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmboundary.data.schema import Step, extract_answer
from mmboundary.text.statements import (
    CONJUNCTIONS,
    LEVELS,
    Mode,
    StatementBank,
    default_bank,
    level_to_value,
    normalize_statement,
    split_final_punct,
    value_to_level,
)
from mmboundary.text.steps import split_steps

# Words a trailing statement may start with when no comma marks it (besides CONJUNCTIONS).
CLAUSE_STARTS = frozenset({
    "with", "without", "beyond", "so", "which", "as", "i", "i'm", "i'd", "i've", "this", "that",
    "that's", "it", "it's", "there", "there's", "my", "no", "not",
})
# A single trailing word that may itself be the statement ("... is red probably.").
TRAILING_ADVERBS = frozenset({
    "probably", "possibly", "perhaps", "maybe", "definitely", "certainly", "surely", "likely",
    "undoubtedly", "presumably", "apparently",
})
_NUMERIC = re.compile(r"[\s,;]*\(\s*confidence\s*[:=]?\s*(?P<num>\d*\.?\d+)\s*(?P<pct>%)?\s*\)$",
                      re.IGNORECASE)
Rule = Literal["nearest", "centroid", "knn"]


@dataclass(frozen=True)
class Detection:
    """A statement found at ``[start, end)`` of a step's text, and what it stands for."""

    start: int
    end: int
    statement: str
    value: float
    level: int | None = None
    similarity: float = 1.0
    matched: str | None = None


def _content_end(text: str, start: int) -> int:
    end = start
    while end > 0 and text[end - 1] in " \t,;:-\u2014":
        end -= 1
    return end


class StatementParser:
    """Find the trailing confidence statement of each step and its value.

    ``mode="statement"``: (1) exact match: any suffix of the step (final punctuation dropped) that
    equals a bank statement after ``normalize_statement`` (leading "and/but/..." optional);
    (2) else candidate clauses = suffixes of at most ``max_clause_words`` words starting after a
    comma, at a linking word (``CONJUNCTIONS``, ``CLAUSE_STARTS``) or a final adverb; each is scored
    s = max_j g(clause, bank_j) with the similarity model g (cosine); among the clauses with
    s >= max s - ``margin`` the longest wins **(ours: longer clauses keep their negations)**, and it is
    a statement when s >= ``threshold`` **(ours: default 0.5, measured in tests/test_statements.py)**.
    Its level: ``rule="nearest"`` (paper: level of the nearest bank statement), ``"centroid"``
    (nearest level centroid) or ``"knn"`` (mean of the ``k`` best similarities per level).
    All candidate clauses of all texts given to ``parse_many`` are embedded in one batch; the bank
    is embedded once; exact matches need no model at all.
    ``mode="numeric"`` (ablation "w/o S-S mapping"): a trailing "(confidence 0.7)" (or "70%").
    """

    def __init__(self, bank: StatementBank | None = None, similarity: object | None = None, *,
                 threshold: float = 0.5, mode: Mode = "statement", rule: Rule = "nearest",
                 k: int = 3, margin: float = 0.05, max_clause_words: int = 12) -> None:
        if mode not in ("statement", "numeric"):
            raise ValueError(f"mode must be 'statement' or 'numeric', got {mode!r}")
        if rule not in ("nearest", "centroid", "knn"):
            raise ValueError(f"rule must be 'nearest', 'centroid' or 'knn', got {rule!r}")
        self.bank = bank or default_bank()
        self._similarity = similarity
        self.threshold, self.mode, self.rule, self.k = threshold, mode, rule, k
        self.margin, self.max_clause_words = margin, max_clause_words
        self._bank_emb: np.ndarray | None = None
        self._labels = np.asarray(self.bank.labels)

    @property
    def similarity(self):  # noqa: ANN201 - a SimilarityModel
        """The similarity model (the offline MiniLM unless one was given), loaded on first use."""
        if self._similarity is None:
            from mmboundary.models.similarity import default_similarity

            self._similarity = default_similarity()
        return self._similarity

    # -- public API ---------------------------------------------------------------------------
    def parse(self, text: str) -> list[Step]:
        """``split_steps(text)`` with each step's statement detected (see ``parse_steps``)."""
        return self.parse_many([text])[0]

    def parse_many(self, texts: list[str]) -> list[list[Step]]:
        """Parse several responses with one batched embedding call for all their steps."""
        all_steps = [split_steps(text) for text in texts]
        flat = [step for steps in all_steps for step in steps]
        for step, found in zip(flat, self.detect([s.text for s in flat]), strict=True):
            if found is None:
                step.content_end, step.statement, step.expressed_confidence = step.end, None, None
                continue
            step.statement = found.statement
            step.content_end = step.start + _content_end(step.text, found.start)
            step.expressed_confidence = found.value
        return all_steps

    def detect_one(self, text: str, *, allow_bare: bool = False) -> Detection | None:
        """The statement ``text`` ends with (``allow_bare``: ``text`` may be only a statement)."""
        return self.detect([text], allow_bare=allow_bare)[0]

    def detect(self, step_texts: list[str], *, allow_bare: bool = False) -> list[Detection | None]:
        """One detection (or ``None``) per step text; embedding calls batched over all steps."""
        if self.mode == "numeric":
            return [self._detect_numeric(text) for text in step_texts]
        out: list[Detection | None] = [None] * len(step_texts)
        pending: list[tuple[int, str, list[int]]] = []  # (step index, body, candidate starts)
        for i, text in enumerate(step_texts):
            body = split_final_punct(text)[0]
            starts = _keeping_answer(body, self._word_starts(body, allow_bare))
            out[i] = self._detect_exact(body, starts)
            if out[i] is None:
                cands = self._candidate_starts(body, starts, allow_bare)
                if cands:
                    pending.append((i, body, cands))
        if pending:
            self._detect_by_similarity(pending, out)
        return out

    # -- internals ------------------------------------------------------------------------------
    def _word_starts(self, body: str, allow_bare: bool) -> list[int]:
        starts = [m.start() for m in re.finditer(r"\S+", body)]
        first = 0 if allow_bare else 1
        return starts[max(first, len(starts) - self.max_clause_words):]

    def _detect_exact(self, body: str, starts: list[int]) -> Detection | None:
        for start in starts:  # earliest start = longest suffix first
            level = self.bank.exact_index.get(normalize_statement(body[start:]))
            if level is not None:
                # "..., and I can't be entirely sure" matches the bank's "but I can't ..." without
                # its conjunction: the conjunction belongs to the statement, not to the content
                start = self._extend_over_conjunction(body, start)
                clause = body[start:].strip(" ,;:")
                return Detection(start, len(body), clause, level_to_value(level), level, 1.0,
                                 matched=clause)
        return None

    def _candidate_starts(self, body: str, starts: list[int], allow_bare: bool) -> list[int]:
        cands = []
        for j, start in enumerate(starts):
            word = normalize_statement(body[start:].split(" ", 1)[0])
            after_comma = start > 0 and body[:start].rstrip()[-1:] in ",;:(\u2014-"
            last = j == len(starts) - 1 and word in TRAILING_ADVERBS
            bare = allow_bare and start == 0
            if after_comma or last or bare or word in CONJUNCTIONS or word in CLAUSE_STARTS:
                cands.append(start)
        return cands

    def _bank_embeddings(self) -> np.ndarray:
        if self._bank_emb is None:
            self._bank_emb = np.asarray(self.similarity.encode(self.bank.statements))
        return self._bank_emb

    def _scores(self, clauses: list[str]) -> np.ndarray:
        """g(clause_i, bank_j) for every clause and bank statement, one batch."""
        if hasattr(self.similarity, "encode"):
            emb = np.asarray(self.similarity.encode(clauses))
            return np.clip(emb @ self._bank_embeddings().T, 0.0, 1.0)
        if self.rule == "centroid":
            raise ValueError("rule='centroid' needs a bi-encoder similarity model (with .encode)")
        return np.asarray(self.similarity.pairwise(clauses, self.bank.statements))

    def _level(self, scores: np.ndarray, clause: str) -> int:
        if self.rule == "nearest":
            return int(self._labels[int(np.argmax(scores))])
        if self.rule == "knn":
            per_level = [np.sort(scores[self._labels == k])[-self.k:].mean() for k in LEVELS]
            return LEVELS[int(np.argmax(per_level))]
        emb = self._bank_embeddings()
        cents = np.stack([emb[self._labels == k].mean(axis=0) for k in LEVELS])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        vec = np.asarray(self.similarity.encode([clause]))[0]
        return LEVELS[int(np.argmax(cents @ vec))]

    def _detect_by_similarity(self, pending: list[tuple[int, str, list[int]]],
                              out: list[Detection | None]) -> None:
        clauses = [body[s:].strip(" ,;:(") for _, body, cands in pending for s in cands]
        scores = self._scores(clauses)
        row = 0
        for i, body, cands in pending:
            block = scores[row: row + len(cands)]
            best = block.max(axis=1)
            row += len(cands)
            top = float(best.max())
            if top < self.threshold:
                continue
            pick = int(np.flatnonzero(best >= top - self.margin)[0])  # earliest = longest
            start = cands[pick]
            start = self._extend_over_conjunction(body, start)
            clause = body[start:].strip(" ,;:(")
            level = self._level(block[pick], clause)
            out[i] = Detection(start, len(body), clause, level_to_value(level), level,
                               float(best[pick]), self.bank.statements[int(np.argmax(block[pick]))])

    @staticmethod
    def _extend_over_conjunction(body: str, start: int) -> int:
        """Move ``start`` back over a linking word just before it ("red, though I'm not sure"),
        unless the clause already opens with one: a statement has at most one, so in "0
        although, but this is just a guess" the "although" stays content."""
        first = body[start:].strip(" ,;:(").split(" ", 1)[0]
        if normalize_statement(first) in CONJUNCTIONS:
            return start
        head = body[:start].rstrip()
        match = re.search(r"(\S+)$", head)
        if match and normalize_statement(match.group(1)) in CONJUNCTIONS and match.start() > 0:
            return match.start()
        return start

    def _detect_numeric(self, text: str) -> Detection | None:
        body = split_final_punct(text)[0]
        match = _NUMERIC.search(body)
        if match is None or match.start() == 0:
            return None
        value = float(match.group("num")) / (100.0 if match.group("pct") else 1.0)
        if not 0.0 <= value <= 1.0:
            return None
        start = match.start() + len(match.group()) - len(match.group().lstrip(" \t,;"))
        return Detection(start, len(body), body[start:], value, value_to_level(value))


def _keeping_answer(body: str, starts: list[int]) -> list[int]:
    """The statement starts that leave a stated answer in the content: a statement is never
    detected inside "So, the answer is X" (the nearest-neighbour fallback would otherwise read
    "the answer is I don't know" as a level-2 statement and the answer step would vanish)."""
    if extract_answer(body) is None:
        return starts
    return [s for s in starts if extract_answer(body[:s].rstrip(" ,;:")) is not None]


@functools.lru_cache(maxsize=4)
def default_parser(mode: Mode = "statement") -> StatementParser:
    """A shared parser over the shipped bank and the default similarity model."""
    return StatementParser(mode=mode)


def parse_steps(text: str, parser: StatementParser | None = None) -> list[Step]:
    """Split ``text`` into steps and detect each step's trailing statement (see ``StatementParser``).

    Sets ``Step.statement``, ``Step.content_end`` (absolute, in ``text``) and
    ``Step.expressed_confidence``; a step with no statement gets ``content_end = end`` and ``None``.
    """
    return (parser or default_parser()).parse(text)


def statement_confidence(text: str, parser: StatementParser | None = None) -> float | None:
    """The value of the statement that ``text`` is or ends with; ``None`` when nothing is said.

    >>> statement_confidence("but I can't be entirely sure")
    0.5
    """
    detection = (parser or default_parser()).detect_one(text, allow_bare=True)
    return None if detection is None else detection.value
