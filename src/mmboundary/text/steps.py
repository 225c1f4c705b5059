"""Split a response into steps (sentences) with character spans, and map steps to tokens.

METHOD.md section 1: a step is one sentence. Abbreviations ("e.g.", "Mr."), decimals ("3.5"),
quoted answers ("... is 'warm'.") and list markers ("1. ", "a) ", "- ") must not split; newlines
always end a step. Spans index the original text, so nothing is ever lost or rewritten:
``text[s.start:s.end]`` for every step, joined by the whitespace between them, is the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmboundary.data.schema import Step

# Words that end with a dot but never end a sentence (compared lower-cased, without the dot).
ABBREVIATIONS = frozenset(
    {
        "e.g", "i.e", "eg", "ie", "cf", "vs", "viz", "approx", "ca", "mr", "mrs", "ms", "dr",
        "prof", "st", "jr", "sr", "inc", "ltd", "co", "u.s", "u.k", "a.m", "p.m", "mt",
    }
)
# Abbreviations only when a number follows ("No. 5", "Fig. 2"): "the answer is no. It" splits.
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "fig", "figs", "eq", "sec", "vol", "p", "pp"})
_CLOSERS = "\"'\u2019\u201d)]}"
_TERMINATORS = ".!?\u2026"
# A list marker at the start of a line: "1.", "12)", "a)", "(b)", "-", "*", "\u2022".
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.)]|\(?[A-Za-z][.)]|[-*\u2022])$")


def _word_before(text: str, dot: int) -> str:
    """The run of non-space characters ending just before position ``dot``."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:dot]


def _is_boundary(text: str, term: int, after: int, seg_start: int) -> bool:
    """Whether the terminator at ``term`` (closers end at ``after``) ends a sentence;
    ``seg_start`` = where the current sentence began (a list marker there never ends one)."""
    nxt = after
    while nxt < len(text) and text[nxt] in " \t":
        nxt += 1
    if nxt == after and nxt < len(text) and text[nxt] != "\n":
        return False  # no whitespace after: "3.5", "e.g.x", "a.m.", URLs
    if nxt < len(text) and text[nxt].islower():
        return False  # "e.g. a cat", "approx. ten": a lowercase continuation
    if text[term] == ".":
        word = _word_before(text, term).lstrip("(\"'").lower()
        if word in ABBREVIATIONS:
            return False
        if word in NUMBER_ABBREVIATIONS and nxt < len(text) and text[nxt].isdigit():
            return False
        if _LIST_MARKER.match(text[seg_start : term + 1]):
            return False  # "1. The image shows ...", also inline: "... a cake. 2. The cake ..."
        if re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):
            return False  # dotted initialisms "u.s", "e.g" variants
    return True


def _raw_segments(text: str) -> list[tuple[int, int]]:
    """Sentence segments as half-open spans before whitespace trimming."""
    cuts: list[int] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            cuts.append(i + 1)
        elif ch in _TERMINATORS:
            j = i + 1
            while j < n and (text[j] in _TERMINATORS or text[j] in _CLOSERS):
                j += 1
            if j >= n or _is_boundary(text, i, j, cuts[-1] if cuts else 0):
                cuts.append(j)
            i = j
            continue
        i += 1
    spans = []
    prev = 0
    for cut in [*cuts, n]:
        if cut > prev:
            spans.append((prev, cut))
        prev = cut
    return spans


def split_steps(text: str) -> list[Step]:
    """Split ``text`` into steps: one per sentence, with ``[start, end)`` character spans.

    Leading and trailing whitespace of each sentence is outside its span; empty segments vanish.
    Statements are not detected here (see ``mmboundary.text.statements.parse_steps``).

    >>> [s.text for s in split_steps("The cake shows 3.5, e.g. a half. So, the answer is 'warm'.")]
    ['The cake shows 3.5, e.g. a half.', "So, the answer is 'warm'."]
    """
    steps: list[Step] = []
    for lo, hi in _raw_segments(text):
        while lo < hi and text[lo].isspace():
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        if hi > lo:
            steps.append(Step(index=len(steps), text=text[lo:hi], start=lo, end=hi))
    return steps


def align_steps_to_tokens(steps: list[Step], offsets: Sequence[tuple[int, int]]) -> list[Step]:
    """Fill ``token_start``/``token_end`` of each step from the tokens' character offsets.

    A token belongs to the step whose content span ``[start, content_end)`` contains the token's
    first non-whitespace character position approximated by the token span: a token overlapping a
    step's content is assigned to the first such step. Zero-width tokens (special tokens) belong to
    no step. A step with no content token gets an empty span ``token_start == token_end``.
    Uses only the offsets (no decode-prefix loops), so it is linear in steps + tokens.
    """
    order = sorted(range(len(steps)), key=lambda k: steps[k].start)
    token = 0
    n_tokens = len(offsets)
    for k in order:
        step = steps[k]
        content_end = step.content_end if step.content_end is not None else step.end
        # skip tokens ending at or before the step start (or zero-width tokens)
        while token < n_tokens and (offsets[token][1] <= step.start or offsets[token][0] == offsets[token][1]):
            token += 1
        first = token
        last = first
        while last < n_tokens and offsets[last][0] < content_end:
            last += 1
        step.token_start, step.token_end = first, max(first, last)
        # tokens between content_end and the step end (statement, punctuation) are skipped
        while token < n_tokens and offsets[token][0] < step.end:
            token += 1
        token = max(token, last)
    return steps
