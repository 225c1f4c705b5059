"""Prompts for asking a VLM a sample's question: the text of the question and the chat messages.

The model's own chat template renders the messages (``processor.apply_chat_template``), so the
same prompt text works for every architecture. The reference chains end with
"So, the answer is X" where X is the answer text (for multiple choice: the choice's text), so the
default instruction asks for the same form.
"""

from __future__ import annotations

from string import ascii_uppercase
from typing import Any

from mmboundary.data.schema import Sample

DEFAULT_INSTRUCTION = (
    "Let's think step by step, one short sentence per step, and finish with "
    '"So, the answer is X." where X is the answer.'
)
CHOICE_INSTRUCTION = (
    "Let's think step by step, one short sentence per step, and finish with "
    '"So, the answer is X." where X is the text of the correct choice.'
)


def format_choices(choices: list[str]) -> str:
    """Lettered choices, one per line: ``(A) one\\n(B) ten``.

    >>> format_choices(["one", "ten"])
    '(A) one\\n(B) ten'
    """
    if len(choices) > len(ascii_uppercase):
        raise ValueError(f"format_choices: at most {len(ascii_uppercase)} choices, got {len(choices)}")
    return "\n".join(f"({letter}) {choice}" for letter, choice in zip(ascii_uppercase, choices, strict=False))


def question_prompt(sample: Sample, instruction: str | None = None) -> str:
    """The user text for ``sample``: question, lettered choices (if any), then the instruction.

    ``instruction`` defaults to ``CHOICE_INSTRUCTION`` for multiple choice and
    ``DEFAULT_INSTRUCTION`` otherwise.

    >>> s = Sample(id="1", dataset="x", question="What colour is it?", choices=["red", "blue"])
    >>> print(question_prompt(s, instruction="Answer."))
    Question: What colour is it?
    Choices:
    (A) red
    (B) blue
    Answer.
    """
    parts = [f"Question: {sample.question.strip()}"]
    if sample.choices:
        parts += ["Choices:", format_choices(sample.choices)]
    if instruction is None:
        instruction = CHOICE_INSTRUCTION if sample.choices else DEFAULT_INSTRUCTION
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)


def build_messages(question_text: str, with_image: bool = True) -> list[dict[str, Any]]:
    """One user turn holding the image (first) and ``question_text``, in the HF chat format."""
    content: list[dict[str, Any]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": question_text})
    return [{"role": "user", "content": content}]
