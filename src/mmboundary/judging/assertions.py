"""The ``assertions`` step judge: a step is wrong when it asserts something its reference denies.

The offline default judge (ours). A sentence encoder sees "a large red umbrella" and "a small red
umbrella" as the same sentence (MiniLM cosine 0.96), so similarity alone cannot judge a step. This
judge reads what each step *asserts* — its numbers, colours, polarity, antonym-bearing words
(sizes, sides and positions, states, relations), the objects it names (as members of groups of
mutually exclusive alternatives), proper names — and calls a predicted step wrong when those facts
contradict its aligned reference step. Rules, in order (the first that fires decides):

1. ``answer``: both steps state "the answer is X" and the two answers differ.
2. ``number``: the step gives a number its reference step does not, while the reference gives a
   different one (or no step of the reference chain nor the question has it); or it says "one" /
   "single" where the reference speaks of several.
3. ``colour``: the step names a colour its reference step does not, and the reference names another.
4. ``polarity``: negation parity differs ("is" vs "is not", "no", "never", "without", "absence")
   XOR an odd number of binary-antonym swaps (left/right, big/small, open/shut, help/hinder...): so
   "not clean" = "dirty" is kept, "not clean" vs "clean" and "clean" vs "dirty" are caught.
5. ``exclusive``: the step has a word of a group of mutually exclusive alternatives (dog/cat/horse,
   sit/stand/lie, wood/metal/plastic, tennis/golf...) that its reference lacks, and the reference
   has another member of the same group that the step lacks.
6. ``name``: the step has a proper name (a capitalised word past the first) that appears nowhere in
   the reference chain or the question (acronyms such as "US" count as their words), while its
   reference step has a name the step lacks.
7. ``substitution``: the two steps are the same sentence but for one-word swaps (aligned content
   lemmas), and a swap puts one lexicon word for another of a different exclusive group.
8. ``topic``: otherwise the step is correct when g(pred, ref) >= ``topic_floor``, the similarity
   of :class:`~mmboundary.judging.simple.SimilarityJudge`, used here only as a topicality floor.

Score: g when correct, ``0.2 * g`` when a rule fires (so every wrong verdict scores below 0.2).
What it is not: a reasoner. It cannot see a contradiction spread over two clauses ("not connected
... can work" vs "connected ... cannot work"), a false step that uses none of the watched words, or
a synonym it has no entry for. Designed on the dev half of ``benchmarks/judge_data``.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence

from mmboundary.judging.base import JudgeItem, StepVerdict, register_judge
from mmboundary.judging.facts import StepFacts, Support, negation_count, read_facts, read_support
from mmboundary.judging.lexicon import Lexicon, load_lexicon
from mmboundary.judging.simple import UsesSimilarity
from mmboundary.models.similarity import SimilarityModel

# g below this = another topic (ours): the paper's step threshold, so that a step this judge calls
# correct is also correct for the similarity judge. On the dev half, hand paraphrases score >= 0.79
# and steps of other questions' chains <= 0.66 (95% of them <= 0.3).
DEFAULT_TOPIC_FLOOR = 0.5
WRONG_SCORE_FACTOR = 0.2


# ---- the rules: each returns a reason when it finds a contradiction, else None ---------------
def answer_rule(pred: StepFacts, ref: StepFacts, lex: Lexicon) -> str | None:
    """Rule 1: two "the answer is X" steps with different answers (numbers and synonyms equal)."""
    if pred.answer is None or ref.answer is None:
        return None
    a, b = read_facts(pred.answer, lex), read_facts(ref.answer, lex)
    if a.numbers != b.numbers or (set(a.content) != set(b.content) and not a.numbers):
        return f"answer {pred.answer!r} vs reference answer {ref.answer!r}"
    return None


def number_rule(pred: StepFacts, ref: StepFacts, support: Support) -> str | None:
    """Rule 2: a number the reference step contradicts or nothing supports; one vs several."""
    novel = pred.numbers - ref.numbers
    if novel and ref.numbers:
        return f"number {sorted(novel)} vs reference {sorted(ref.numbers)}"
    if novel - support.numbers - {1}:
        return f"number {sorted(novel - support.numbers)} appears nowhere in the reference"
    single = (pred.one_of & ref.several_of) - ref.one_of
    if single:
        return f"says one {sorted(single)[0]!r} where the reference has several"
    return None


def colour_rule(pred: StepFacts, ref: StepFacts) -> str | None:
    """Rule 3: a colour the reference step lacks while it names another one, for the same thing
    (or for a thing either step leaves unsaid)."""
    ref_colours = {c for c, _ in ref.colours}
    pred_colours = {c for c, _ in pred.colours}
    for colour, noun in sorted(pred.colours):
        if colour in ref_colours:
            continue
        for other, other_noun in sorted(ref.colours):
            if other not in pred_colours and (not noun or not other_noun or noun == other_noun):
                return f"colour {colour!r} vs reference {other!r}"
    return None


def differences(pred: StepFacts, ref: StepFacts, lex: Lexicon) -> tuple[list[str], list[str]]:
    """Canonical content words the step has more often than its reference, and the reverse
    (multisets, so "low ... high" -> "high ... high" shows a swap)."""
    keep = [w for w in (*pred.bag, *ref.bag) if w not in lex.stopwords and w not in lex.framing]
    a = Counter(w for w in pred.bag if w in keep)
    b = Counter(w for w in ref.bag if w in keep)
    only_pred = sorted(w for w in (a - b) if w not in ref.words or b[w])
    only_ref = sorted(w for w in (b - a) if w not in pred.words or a[w])
    return only_pred, only_ref


def antonym_swaps(only_pred: list[str], only_ref: list[str], lex: Lexicon) -> list[str]:
    """Binary-antonym swaps between the two difference lists, at most one per word of the step:
    lexicon pairs (left/right, big/small...) and negating prefixes (covered/uncovered)."""
    swaps = []
    for word in only_pred:
        found = None
        for index, side in lex.antonym_side.get(word, []):
            other = [w for w in only_ref if (index, 1 - side) in lex.antonym_side.get(w, [])]
            if other:
                found = f"{lex.antonym_category[index]}: {word!r} vs {other[0]!r}"
                break
        for other in only_ref if found is None else []:
            if _prefix_negated(word, other, lex) or _prefix_negated(other, word, lex):
                found = f"attribute: {word!r} vs {other!r}"
                break
        if found:
            swaps.append(found)
    return swaps


def _prefix_negated(word: str, base: str, lex: Lexicon) -> bool:
    """``word`` = a negating prefix + ``base`` ("uncover" / "cover"), ``base`` >= 4 letters."""
    return len(base) >= 4 and any(word == p + base for p in lex.prefix_negations)


def polarity_rule(pred: StepFacts, ref: StepFacts, lex: Lexicon) -> str | None:
    """Rule 4: negation parity differs, or binary antonyms swapped -- except exactly one of each,
    which cancel ("is not clean" = "is dirty") (ours)."""
    swaps = antonym_swaps(*differences(pred, ref, lex), lex)
    n_pred, n_ref = negation_count(pred, ref), negation_count(ref, pred)
    flipped = (n_pred - n_ref) % 2 == 1
    if (flipped and len(swaps) == 1) or (not flipped and not swaps):
        return None
    if flipped:
        return f"polarity: {n_pred} negation(s) vs {n_ref} in the reference"
    return swaps[0]


def exclusive_rule(pred: StepFacts, ref: StepFacts, lex: Lexicon) -> str | None:
    """Rule 5: the step and its reference pick different members of one exclusive group."""
    only_pred, only_ref = differences(pred, ref, lex)
    for word in only_pred:
        groups = set(lex.exclusive_groups.get(word, []))
        for other in only_ref:
            shared = groups & set(lex.exclusive_groups.get(other, []))
            if shared:
                return f"{lex.group_category[min(shared)]}: {word!r} vs {other!r}"
    return None


def name_rule(pred: StepFacts, ref: StepFacts, support: Support) -> str | None:
    """Rule 6: a proper name nothing in the reference supports, while the reference step has a
    name the step lacks."""
    novel = {n for n in pred.names - support.lemmas if not _same_name(n, support.lemmas)}
    missing = {n for n in ref.names - pred.lemmas if not _same_name(n, pred.lemmas)}
    if novel and missing:
        return f"name {sorted(novel)} vs reference {sorted(missing)}"
    return None


def _same_name(name: str, others: set[str]) -> bool:
    """A name and its demonym or -ism are one name (ours): Ethiopia / Ethiopian, Hindu / Hinduism,
    Germany / German, China / Chinese: two lemmas sharing a prefix of at least 4 letters that is
    all of the shorter but at most its last 2 letters, the longer going on with a demonym or -ism
    ending (so Austria / Australia stay two names). Measured after the A-OKVQA benchmark was
    frozen, on CulturalVQA, where such pairs were most of the name rule's false alarms."""
    for other in others:
        short, long_ = sorted((name, other), key=len)
        if len(short) < 4:
            continue
        common = 0
        while common < len(short) and short[common] == long_[common]:
            common += 1
        if common >= 4 and len(short) - common <= 2 and long_[common:] in _NAME_SUFFIXES:
            return True
    return False


_NAME_SUFFIXES = frozenset({"", "n", "an", "ian", "es", "ese", "ish", "ism", "ist", "i", "y",
                            "s", "ns", "ans", "ians", "ic"})


def substitution_rule(pred: StepFacts, ref: StepFacts, lex: Lexicon) -> str | None:
    """Rule 7: the two steps are one sentence but for a one-word swap between two lexicon words
    of *different* exclusive groups ("rock" for "grass", "window" for "sign").

    Aligns the canonical content lemmas (difflib); the steps count as one sentence when every
    difference is a one-word ``replace`` and at least half of the reference's content words are
    kept in place (ours). A swap of two words the lexicon does not know is not a contradiction:
    the sentence encoder cannot tell "unhooked"/"disconnected" (cosine 0.38) from "rock"/"grass"
    (0.51), so it is not asked (measured on the dev half).
    """
    a, b = list(pred.content), list(ref.content)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    if not b or kept < max(1, len(b) / 2):
        return None
    swaps = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag != "replace" or i2 - i1 != 1 or j2 - j1 != 1:
            return None
        swaps.append((a[i1], b[j1], pred.surface[i1], ref.surface[j1]))
    for new, old, new_text, old_text in swaps:
        if new in lex.exclusive_groups and old in lex.exclusive_groups and new != old:
            return f"substitution: {new_text!r} for {old_text!r}"
    return None


def contradiction(item: JudgeItem, lex: Lexicon) -> str | None:
    """Rules 1-7 on one pair: the reason of the first that fires, else None. Pure apart from the
    cached lexicon."""
    pred, ref = read_facts(item.pred, lex), read_facts(item.ref, lex)
    support = read_support(item, lex)
    return (answer_rule(pred, ref, lex) or number_rule(pred, ref, support)
            or colour_rule(pred, ref) or polarity_rule(pred, ref, lex)
            or exclusive_rule(pred, ref, lex) or name_rule(pred, ref, support)
            or substitution_rule(pred, ref, lex))


def _same_text(a: str, b: str) -> bool:
    from mmboundary.judging.simple import normalize_step

    return normalize_step(a) == normalize_step(b)


@register_judge("assertions")
class AssertionJudge(UsesSimilarity):
    """Wrong when the step contradicts its aligned reference step (module docstring: rules 1-8).

    Args:
        similarity: sentence-similarity model for the topicality floor (default: the offline
            all-MiniLM-L6-v2, loaded on first use).
        topic_floor: g(pred, ref) below this is another topic, hence wrong (ours: 0.5).
        lexicon: path of a lexicon JSON replacing the package's ``judge_lexicon.json``.

    Reads ``JudgeItem.similarity`` when the aligner filled it, and ``reference`` and ``question``
    to decide whether a number or a name is new. Deterministic; one encoder call per batch.

    >>> judge = AssertionJudge()
    >>> [v.correct for v in judge.judge([
    ...     JudgeItem("A man is holding a large red umbrella.", "The man holds a big red umbrella."),
    ...     JudgeItem("The man holds a small red umbrella.", "The man holds a large red umbrella."),
    ... ])]
    [True, False]
    """

    name = "assertions"

    def __init__(self, similarity: SimilarityModel | None = None,
                 topic_floor: float = DEFAULT_TOPIC_FLOOR, lexicon: str | None = None) -> None:
        if not 0.0 <= topic_floor <= 1.0:
            raise ValueError(f"assertions judge: topic_floor must be in [0, 1], got {topic_floor}")
        self.topic_floor = topic_floor
        self.lexicon_path = None if lexicon is None else str(lexicon)
        self._similarity = similarity

    def judge(self, items: Sequence[JudgeItem]) -> list[StepVerdict]:
        lex = load_lexicon(self.lexicon_path)
        sims = self._sentence_sims(items)
        out = []
        for item, g in zip(items, sims, strict=True):
            if _same_text(item.pred, item.ref):
                out.append(StepVerdict(True, 1.0, "same text as the reference step"))
                continue
            reason = contradiction(item, lex)
            if reason is None and g < self.topic_floor:
                reason = f"topic: g={g:.3f} below the floor {self.topic_floor}"
            if reason is None:
                out.append(StepVerdict(True, g, f"no contradiction found; g={g:.3f}"))
            else:
                out.append(StepVerdict(False, WRONG_SCORE_FACTOR * g, reason))
        return out

    def _sentence_sims(self, items: Sequence[JudgeItem]) -> list[float]:
        sims = [it.similarity for it in items]
        todo = [i for i, s in enumerate(sims) if s is None]
        if todo:
            fresh = self.similarity.paired([items[i].pred for i in todo],
                                           [items[i].ref for i in todo])
            for i, value in zip(todo, fresh, strict=True):
                sims[i] = float(value)
        return [float(s) for s in sims]  # type: ignore[arg-type]
