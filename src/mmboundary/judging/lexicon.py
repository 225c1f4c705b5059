"""Words as the assertions judge reads them: tokens, a light lemmatiser and the judge's lexicon.

The lexicon is data (``resources/judge_lexicon.json``, ours): stopwords, framing words, negation
markers, colours, number words, synonym groups, binary antonyms and groups of mutually exclusive
alternatives. Every lexicon entry passes through the same :func:`lemma` as the steps, so the
lemmatiser only has to be *consistent* ("holding", "holds", "held" -> ``hold``), not linguistically
exact (ours: a suffix stripper plus an irregular-forms table, no tagger, nothing downloaded).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|s)?|[A-Za-z]+(?:'[A-Za-z]+)?|n't")
_VOWELS = set("aeiou")


def tokenize(text: str) -> list[str]:
    """Words of ``text`` in order, original case; hyphens and quotes split words, "n't" is its own
    token ("isn't" -> "is", "n't"), possessive "'s" is dropped.

    >>> tokenize("The dog's owner isn't 30-years old.")
    ['The', 'dog', 'owner', 'is', "n't", '30', 'years', 'old']
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"(?i)\b(can)not\b", r"\1 not", text)
    text = re.sub(r"(?i)n't\b", " n't", text)
    text = re.sub(r"(?i)(\w)'s\b", r"\1", text)
    return [t for t in _TOKEN_RE.findall(text) if t.lower() not in {"'s"}]


@dataclass(frozen=True)
class Lexicon:
    """The judge's word lists, keyed by lemma (see the module docstring)."""

    stopwords: frozenset[str]
    framing: frozenset[str]
    negations: frozenset[str]
    colours: frozenset[str]
    numbers: dict[str, int]
    plural_quantifiers: frozenset[str]
    forms: dict[str, str]
    synonym_of: dict[str, str]
    antonym_side: dict[str, list[tuple[int, int]]]
    exclusive_groups: dict[str, list[int]]
    group_category: dict[int, str]
    antonym_category: dict[int, str]
    acronyms: dict[str, tuple[str, ...]]
    prefix_negations: tuple[str, ...] = ()

    def lemma(self, word: str) -> str:
        """Lower-cased base form: irregular table first, then suffix rules (:func:`strip_suffix`)."""
        low = word.lower()
        return self.forms.get(low) or strip_suffix(low)

    def canon(self, word: str) -> str:
        """The lemma mapped to its synonym group's head ("couch" -> "sofa")."""
        base = self.lemma(word)
        return self.synonym_of.get(base, base)


def strip_suffix(word: str) -> str:
    """A consistent suffix stripper (ours): plural -s/-es/-ies, -ing, -ed, final -e.

    >>> [strip_suffix(w) for w in ("holding", "holds", "cities", "boxes", "sitting", "sits")]
    ['hold', 'hold', 'city', 'box', 'sit', 'sit']
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS | {"l", "s"}:
                stem = stem[:-1]  # sitting -> sit, but falling -> fall, missing -> miss
            word = stem
            break
    if word.endswith("e") and len(word) > 3 and not word.endswith("ee"):
        word = word[:-1]
    return word


def _resource_text() -> str:
    return resources.files("mmboundary").joinpath("resources", "judge_lexicon.json").read_text(
        encoding="utf-8")


@functools.lru_cache(maxsize=4)
def load_lexicon(path: str | None = None) -> Lexicon:
    """The lexicon from ``path`` (a JSON file of the same shape) or the package's own."""
    raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8") if path
                                     else _resource_text())
    forms = {k.lower(): v.lower() for k, v in raw.get("forms", {}).items()}

    def lem(word: str) -> str:
        return forms.get(word.lower()) or strip_suffix(word.lower())

    synonym_of: dict[str, str] = {}
    for group in raw["synonyms"]:
        head = lem(group[0])
        for word in group:
            synonym_of.setdefault(lem(word), head)

    def canon(word: str) -> str:
        base = lem(word)
        return synonym_of.get(base, base)

    antonym_side: dict[str, list[tuple[int, int]]] = {}
    antonym_category = {}
    for index, (side_a, side_b, category) in enumerate(raw["binary_antonyms"]):
        antonym_category[index] = category
        for side, words in enumerate((side_a, side_b)):
            for word in words:
                antonym_side.setdefault(canon(word), []).append((index, side))
    exclusive: dict[str, list[int]] = {}
    group_category = {}
    for index, (members, category) in enumerate(raw["exclusive"]):
        group_category[index] = category
        for word in members:
            exclusive.setdefault(canon(word), []).append(index)
    return Lexicon(
        stopwords=frozenset(w.lower() for w in raw["stopwords"]),
        framing=frozenset(canon(w) for w in raw["framing"]),
        negations=frozenset(w.lower() for w in raw["negations"]),
        colours=frozenset(canon(w) for w in raw["colours"]),
        numbers={w.lower(): int(v) for w, v in raw["numbers"].items()},
        plural_quantifiers=frozenset(lem(w) for w in raw["plural_quantifiers"]),
        forms=forms, synonym_of=synonym_of, antonym_side=antonym_side,
        exclusive_groups=exclusive, group_category=group_category,
        antonym_category=antonym_category,
        acronyms={k.lower(): tuple(lem(w) for w in v) for k, v in raw.get("acronyms", {}).items()},
        prefix_negations=tuple(raw.get("prefix_negations", [])),
    )
