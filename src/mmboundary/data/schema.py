"""The data model shared by every stage: samples, reference chains, responses and steps.

Pydantic models, so a record that breaks a type is reported with the field that broke it, and every
object round-trips through JSON (``model_dump(mode="json")`` / ``model_validate``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# "So, the answer is X" in the forms the real files use: with or without the comma, "Therefore"/
# "Thus", "the final/correct answer", optional quotes around X and trailing punctuation.
_ANSWER_RE = re.compile(
    r"(?:^|\b)(?:so|therefore|thus|hence),?\s+the\s+(?:correct\s+|final\s+)?answer\s+is\s*:?\s*"
    r"(?P<answer>.+?)\s*[.!]?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = "'\"`\u2018\u2019\u201c\u201d"


def extract_answer(step_text: str) -> str | None:
    """Return X from a step stating "So, the answer is X." (quotes and final dot removed).

    Returns None when the step states no answer.

    >>> extract_answer("So, the answer is 'warm'.")
    'warm'
    >>> extract_answer("So the answer is thirty")
    'thirty'
    >>> extract_answer("The cake says 30.") is None
    True
    """
    match = _ANSWER_RE.search(step_text.strip())
    if match is None:
        return None
    answer = match.group("answer").strip().rstrip(".!").strip()
    if len(answer) >= 2 and answer[0] in _QUOTES and answer[-1] in _QUOTES:
        answer = answer[1:-1].strip()
    answer = answer.strip(_QUOTES).strip()
    return answer or None


class ReferenceChain(BaseModel):
    """A reference reasoning chain: perception steps, then reasoning steps ending in the answer."""

    model_config = ConfigDict(extra="forbid")

    image_level: list[str] = Field(default_factory=list)
    reasoning_level: list[str] = Field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        """All reference steps in order (image level first)."""
        return [*self.image_level, *self.reasoning_level]

    @property
    def answer(self) -> str | None:
        """The answer stated by the last reasoning step, if it states one."""
        for step in reversed(self.reasoning_level):
            answer = extract_answer(step)
            if answer is not None:
                return answer
        return None

    def to_annotated(self) -> dict[str, list[str]]:
        """The authors' ``{"Image_level": [...], "Reasoning_level": [...]}`` form."""
        return {"Image_level": list(self.image_level), "Reasoning_level": list(self.reasoning_level)}


class Sample(BaseModel):
    """One VQA sample: image + question (+ choices, gold answers) + reference chain.

    ``answers`` holds the gold answer strings: for multiple choice the correct choice first; for
    A-OKVQA also the 10 direct answers used by VQA soft accuracy (``direct_answers``).
    ``image`` is a path on disk once resolved (``None`` when the dataset ships no image).
    ``answer_mode`` says how a predicted answer is judged (``text.matching.judge_answer``):
    ``auto`` = by the fields present (choices, direct answers, else similarity to the gold);
    ``exact`` = normalised string match only, for closed answers where a sentence encoder would
    call "2" and "3" (cosine 0.87) or "red" and "blue" (0.73) the same (ShapesWorld).
    ``step_match`` says when a predicted step is correct (``text.matching.step_is_correct``):
    ``similarity`` = g(step, reference step) >= tau (METHOD.md); ``exact`` = its normalised text
    equals the reference step's, for templated chains where "to the left of" and "to the right
    of" score 0.99 (ShapesWorld).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    dataset: str
    question: str = Field(min_length=1)
    choices: list[str] | None = None
    correct_choice_idx: int | None = None
    answers: list[str] = Field(default_factory=list)
    direct_answers: list[str] = Field(default_factory=list)
    image_id: str | None = None
    image: str | None = None
    reference: ReferenceChain | None = None
    answer_mode: Literal["auto", "choice", "vqa", "similarity", "exact"] = "auto"
    step_match: Literal["similarity", "exact"] = "similarity"
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def gold_answer(self) -> str | None:
        """The canonical gold answer: the correct choice, else the first answer, else the
        answer stated by the reference chain (CulturalVQA has no other gold field)."""
        if self.choices is not None and self.correct_choice_idx is not None:
            return self.choices[self.correct_choice_idx]
        if self.answers:
            return self.answers[0]
        return self.reference.answer if self.reference is not None else None


class Step(BaseModel):
    """One sentence of a response, with its spans and (later) its confidences.

    Character spans index into ``Response.text``: ``[start, end)`` is the whole sentence including a
    trailing confidence statement and final punctuation; ``[start, content_end)`` is the content the
    estimators score. Token spans ``[token_start, token_end)`` index the response tokens of the
    per-token statistics (content tokens only).
    """

    model_config = ConfigDict(extra="forbid")

    index: int
    text: str
    start: int
    end: int
    content_end: int | None = None
    token_start: int | None = None
    token_end: int | None = None
    statement: str | None = None
    expressed_confidence: float | None = None
    raw_scores: dict[str, float] = Field(default_factory=dict)
    normalized_scores: dict[str, float] = Field(default_factory=dict)
    confidence: float | None = None
    level: int | None = None

    @property
    def content(self) -> str:
        """The step without its confidence statement (the whole text when it has none)."""
        end = self.content_end if self.content_end is not None else self.end
        return self.text[: end - self.start]


class TokenStats(BaseModel):
    """Per-token statistics of a response from ONE pass of a model over prompt + response.

    ``logprobs[i]`` = log p(token_i | context); ``entropies[i]`` = entropy (nats) of the full raw
    next-token distribution at position i; ``offsets[i]`` = the token's character span in the
    response text (from the fast tokenizer's offset mapping).
    """

    model_config = ConfigDict(extra="forbid")

    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    offsets: list[tuple[int, int]]


class Response(BaseModel):
    """What a model wrote for one sample, with its steps and per-token statistics."""

    model_config = ConfigDict(extra="forbid")

    sample_id: str
    text: str
    model: str | None = None
    steps: list[Step] = Field(default_factory=list)
    token_stats: TokenStats | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
