"""Confidence statements: the bank, inserting a statement after a step, and parsing it back.

METHOD.md section 4. A level k in 1..5 stands for the confidence (2k-1)/10 **(ours)**; the bank
(``resources/statements.json``, written by this project) holds at least 20 clauses per level that
follow a sentence ("The cake says 30, but I can't be entirely sure.").

- value -> statement: ``StatementBank.sample(level, rng)``, uniform over the level's pool (seeded).
- statement -> value (paper: sentence encoder + cosine): ``StatementParser`` (in
  ``text.statement_parser``; both are exported by ``mmboundary.text``) tries an exact bank
  match first, else embeds the step's candidate trailing clauses and takes the nearest bank
  statement by cosine; a best cosine below ``threshold`` means the step states nothing.
- ablation "w/o S-S mapping" **(ours)**: ``insert_numeric`` writes "(confidence 0.7)" instead, and
  ``StatementParser(mode="numeric")`` reads it back.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
Mode = Literal["statement", "numeric"]
_FINAL_PUNCT = re.compile(r"[.!?\u2026]+$")


def level_to_value(level: int) -> float:
    """The confidence a level stands for: c = (2k - 1) / 10 **(ours)**.

    >>> [level_to_value(k) for k in LEVELS]
    [0.1, 0.3, 0.5, 0.7, 0.9]
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return (2 * level - 1) / 10


def value_to_level(value: float) -> int:
    """The level whose value is nearest to ``value`` in [0, 1]: k = min(floor(5c) + 1, 5).

    Bins [0, .2) -> 1, [.2, .4) -> 2, ..., [.8, 1] -> 5, so ``value_to_level(level_to_value(k)) == k``.

    >>> value_to_level(0.0), value_to_level(0.5), value_to_level(0.79), value_to_level(1.0)
    (1, 3, 4, 5)
    """
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"confidence must be a finite number in [0, 1], got {value!r}")
    return min(int(math.floor(value * 5)) + 1, 5)


def normalize_statement(text: str) -> str:
    """Lower-case, straight apostrophes, single spaces, no surrounding punctuation or commas."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" ,;:.!?\u2026-\u2014\"()")


# A statement may start with one of these linking words; exact matching also accepts it without.
CONJUNCTIONS = frozenset({"and", "but", "though", "although", "yet", "while", "albeit"})


def _strip_conjunction(norm: str) -> str:
    head, _, rest = norm.partition(" ")
    return rest if head in CONJUNCTIONS and rest else norm


@dataclass(frozen=True)
class StatementBank:
    """The preset statements of each level (``levels[k]`` = tuple of clauses for level k)."""

    levels: dict[int, tuple[str, ...]]

    def __post_init__(self) -> None:
        if sorted(self.levels) != list(LEVELS):
            raise ValueError(f"a bank needs levels {LEVELS}, got {sorted(self.levels)}")
        seen: dict[str, int] = {}
        for level, pool in self.levels.items():
            if not pool:
                raise ValueError(f"level {level} of the statement bank is empty")
            for statement in pool:
                for key in {normalize_statement(statement),
                            _strip_conjunction(normalize_statement(statement))}:
                    if seen.setdefault(key, level) != level:
                        raise ValueError(f"statement {statement!r} (as {key!r}) is in levels "
                                         f"{seen[key]} and {level}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> StatementBank:
        """Read a bank JSON ``{"levels": {"1": [...], ..., "5": [...]}}`` (default: the shipped one)."""
        if path is None:
            raw = resources.files("mmboundary.resources").joinpath("statements.json").read_text()
            where = "mmboundary/resources/statements.json"
        else:
            raw, where = Path(path).read_text(), str(path)
        data = json.loads(raw)
        if not isinstance(data.get("levels"), dict):
            raise ValueError(f"{where}: expected an object with a 'levels' mapping")
        return cls({int(k): tuple(v) for k, v in data["levels"].items()})

    @property
    def statements(self) -> list[str]:
        """All statements, level 1 first."""
        return [s for k in LEVELS for s in self.levels[k]]

    @property
    def labels(self) -> list[int]:
        """The level of each entry of ``statements``."""
        return [k for k in LEVELS for _ in self.levels[k]]

    @functools.cached_property
    def exact_index(self) -> dict[str, int]:
        """Normalised statement (with and without its leading conjunction) -> level."""
        index: dict[str, int] = {}
        for statement, level in zip(self.statements, self.labels, strict=True):
            norm = normalize_statement(statement)
            index[norm] = level
            index.setdefault(_strip_conjunction(norm), level)
        return index

    def subset(self, per_level: int) -> StatementBank:
        """The first ``per_level`` statements of each level (the shipped bank lists the paper's
        own examples first): a compact set a small model can learn (**ours**; the full bank stays
        the default for real models). Every statement of the subset parses exactly with the full
        bank, so evaluation needs no other parser."""
        if per_level < 1:
            raise ValueError(f"StatementBank.subset: per_level must be >= 1, got {per_level}")
        return StatementBank({k: pool[:per_level] for k, pool in self.levels.items()})

    def sample(self, level: int, rng: random.Random) -> str:
        """A statement of ``level`` drawn uniformly from its pool with ``rng`` (seeded by the caller)."""
        if level not in self.levels:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        return rng.choice(self.levels[level])


@functools.lru_cache(maxsize=1)
def default_bank() -> StatementBank:
    """The shipped bank, loaded once."""
    return StatementBank.load()


def split_final_punct(step_text: str) -> tuple[str, str]:
    """``(body, final punctuation)`` of a step: "It is red." -> ("It is red", ".")."""
    body = step_text.rstrip()
    match = _FINAL_PUNCT.search(body)
    if match is None:
        return body, "."
    return body[: match.start()].rstrip(), match.group()


def insert_statement(step_text: str, statement: str) -> str:
    """Drop the step's final punctuation, append ", " + statement + that punctuation ("." if none).

    >>> insert_statement("The cake has the number 30 on it.", "with total certainty")
    'The cake has the number 30 on it, with total certainty.'
    """
    body, punct = split_final_punct(step_text)
    return f"{body}, {statement.strip()}{punct}"


def format_numeric(value: float, decimals: int = 1) -> str:
    """The "w/o S-S mapping" statement **(ours)**: ``(confidence 0.7)``."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"confidence must be in [0, 1], got {value!r}")
    return f"(confidence {value:.{decimals}f})"


def insert_numeric(step_text: str, value: float, decimals: int = 1) -> str:
    """Write the number instead of a statement: "The cake says 30 (confidence 0.7)." **(ours)**.

    >>> insert_numeric("The cake says 30.", 0.7)
    'The cake says 30 (confidence 0.7).'
    """
    body, punct = split_final_punct(step_text)
    return f"{body} {format_numeric(value, decimals)}{punct}"


def insert_confidence(step_text: str, level: int, rng: random.Random, *, mode: Mode = "statement",
                      bank: StatementBank | None = None) -> str:
    """Insert level ``level`` after a step: a sampled bank statement, or its value as a number."""
    if mode == "numeric":
        return insert_numeric(step_text, level_to_value(level))
    if mode == "statement":
        return insert_statement(step_text, (bank or default_bank()).sample(level, rng))
    raise ValueError(f"mode must be 'statement' or 'numeric', got {mode!r}")
