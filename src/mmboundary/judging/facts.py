"""What a step asserts, read with the judge's lexicon: numbers, colours (with what they colour),
negations (with their scope), proper names, "one" vs "several", the stated answer.

Pure functions over :class:`~mmboundary.judging.lexicon.Lexicon`; used by the assertions judge
(:mod:`mmboundary.judging.assertions`), whose rules compare two steps' facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmboundary.data.schema import extract_answer
from mmboundary.judging.base import JudgeItem
from mmboundary.judging.lexicon import Lexicon, tokenize


@dataclass(frozen=True)
class StepFacts:
    """What one step asserts, as the rules read it (words as canonical lemmas)."""

    words: frozenset[str]  # every canonical lemma, plus adjacent pairs joined ("tea cup" -> teacup)
    bag: tuple[str, ...]  # the canonical lemmas with repeats ("horizontal and horizontal")
    lemmas: frozenset[str]  # every lemma before synonym mapping (for names)
    content: tuple[str, ...]  # canonical content lemmas in order (no stop/framing/number words)
    surface: tuple[str, ...]  # the content words as written (what the encoder is shown)
    numbers: frozenset[int]
    colours: frozenset[tuple[str, str]]  # (colour, the word it colours or "")
    negations: tuple[frozenset[str], ...]  # one scope (the words it governs) per negation
    names: frozenset[str]
    one_of: frozenset[str]  # content words right after "one", "single", "lone"
    several_of: frozenset[str]  # content words in the plural, or after "several", "multiple"...
    answer: str | None


def _number(token: str, lex: Lexicon) -> int | None:
    """30, 30th, 2000s, '0' -> int; number words from the lexicon; else None."""
    low = token.lower()
    digits = low.rstrip("sthrdn") if low[:1].isdigit() else ""
    if digits:
        digits = digits.replace(",", "")
        return int(float(digits)) if digits.replace(".", "", 1).isdigit() else None
    return lex.numbers.get(low)


def read_facts(text: str, lex: Lexicon) -> StepFacts:
    """Extract the facts of one step (pure; see :class:`StepFacts`)."""
    tokens = tokenize(text)
    lowered = [t.lower() for t in tokens]
    canon = [lex.canon(t) for t in tokens]
    numbers, content, surface = set(), [], []
    one_of, several_of = set(), set()
    for i, (token, word) in enumerate(zip(lowered, canon, strict=True)):
        value = _number(token, lex)
        if value is not None and not (token == "one" and _pronoun_one(lowered, i, lex)):
            numbers.add(value)
            (one_of if value == 1 else several_of).update(_quantified(lowered, i, lex))
            continue
        if lex.lemma(token) in lex.plural_quantifiers:
            several_of.update(_quantified(lowered, i, lex))
        if token in lex.stopwords or word in lex.framing or token in lex.negations:
            continue
        if token.endswith("s") and len(lex.lemma(token)) < len(token):
            several_of.add(word)  # a plural noun (or a verb's -s: harmless, it is never "one X")
        content.append(word)
        surface.append(token)
    joined = {a + b for a, b in zip(canon, canon[1:], strict=False)
              if a not in lex.stopwords and b not in lex.stopwords}
    return StepFacts(
        words=frozenset(canon) | joined, bag=tuple(canon), lemmas=frozenset(lex.lemma(t) for t in tokens),
        content=tuple(content), surface=tuple(surface), numbers=frozenset(numbers),
        colours=_colours(lowered, canon, lex),
        negations=_negations(lowered, lex), names=_names(tokens, lex),
        one_of=frozenset(one_of), several_of=frozenset(several_of),
        answer=extract_answer(text),
    )


def _colours(tokens: list[str], canon: list[str], lex: Lexicon) -> frozenset[tuple[str, str]]:
    """(colour, coloured word) pairs: the word right after the colour (past other colours, "and",
    "colored"), when it is a content word ("a red and white bus" -> bus for both); "" when the
    colour is predicative ("the bus is red", "dressed in red")."""
    out = set()
    for i, word in enumerate(canon):
        if word not in lex.colours:
            continue
        j = i + 1
        while j < len(canon) and (canon[j] in lex.colours or canon[j] == "color"
                                  or tokens[j] in {"and", "or"}):
            j += 1
        content = j < len(canon) and tokens[j] not in lex.stopwords and canon[j] not in lex.framing
        out.add((word, canon[j] if content else ""))
    return frozenset(out)


def _quantified(tokens: list[str], i: int, lex: Lexicon, span: int = 3) -> list[str]:
    """Canonical content words among the ``span`` tokens after a quantifier at ``i``."""
    after = tokens[i + 1: i + 1 + span]
    return [lex.canon(t) for t in after if t not in lex.stopwords and _number(t, lex) is None]


def _negations(tokens: list[str], lex: Lexicon, after: int = 5, before: int = 2
               ) -> tuple[frozenset[str], ...]:
    """One scope per negation marker: the canonical words up to ``after`` tokens after it and
    ``before`` tokens before it (ours). The superlative "no other X is Y-er than Z" is not one."""
    scopes = []
    for i, token in enumerate(tokens):
        if token in lex.negations:  # surface forms only: "notes" is not "not"
            if token == "no" and tokens[i + 1: i + 2] == ["other"] and "than" in tokens[i + 2:]:
                continue
            window = tokens[max(0, i - before): i] + tokens[i + 1: i + 1 + after]
            scopes.append(frozenset(lex.canon(t) for t in window if t not in lex.stopwords
                                    and t not in lex.negations))
    return tuple(scopes)


def negation_count(facts: StepFacts, other: StepFacts) -> int:
    """Negations of ``facts`` that bear on ``other``: a scope sharing a word with it (or empty).

    "They are not in a zoo" adds no negation against "Giraffes are wild animals": its scope is
    about something the reference does not mention (ours)."""
    return sum(1 for scope in facts.negations if not scope or scope & other.words)


def _pronoun_one(tokens: list[str], i: int, lex: Lexicon) -> bool:
    """"one of", "one that", "the one on the left", "no one": not a count (ours)."""
    after = tokens[i + 1] if i + 1 < len(tokens) else ""
    before = tokens[i - 1] if i > 0 else ""
    if after in {"of", "another", "who", "that", "which", ""}:
        return True
    return before in {"no", "the", "this", "that", "every", "any", "each"} and (
        after in lex.stopwords)


def _names(tokens: list[str], lex: Lexicon) -> frozenset[str]:
    """Proper names: capitalised tokens past the first, and all-capital words, as lemmas."""
    out = set()
    for i, token in enumerate(tokens):
        if not token[:1].isalpha() or token.lower() in lex.stopwords:
            continue
        if (i > 0 and token[0].isupper()) or (len(token) > 1 and token.isupper()):
            out.add(lex.lemma(token))
    return frozenset(out)


@dataclass(frozen=True)
class Support:
    """What the whole reference chain and the question mention (for "is this new?" checks)."""

    words: frozenset[str]
    lemmas: frozenset[str]
    numbers: frozenset[int]


def read_support(item: JudgeItem, lex: Lexicon) -> Support:
    texts = [item.ref, *item.reference, item.question or ""]
    facts = [read_facts(t, lex) for t in texts if t]
    words = frozenset().union(*(f.words for f in facts))
    lemmas = frozenset().union(*(f.lemmas for f in facts))
    for acronym, expansion in lex.acronyms.items():  # "US" is supported by "United States"
        if set(expansion) <= lemmas:
            lemmas |= {acronym}
    return Support(words=words, lemmas=lemmas,
                   numbers=frozenset().union(*(f.numbers for f in facts)))
