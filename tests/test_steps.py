"""Sentence steps: examples from real chains and invariants (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mmboundary.data.schema import Step
from mmboundary.text.steps import align_steps_to_tokens, split_steps


def texts(text: str) -> list[str]:
    return [s.text for s in split_steps(text)]


def test_simple_sentences_and_answer_step():
    assert texts("The cake has 30 on it. It has candles! So, the answer is thirty.") == [
        "The cake has 30 on it.", "It has candles!", "So, the answer is thirty."]


def test_decimals_abbreviations_and_eg_do_not_split():
    assert texts("The bar is 3.5 m long, e.g. longer than a car. Dr. Smith agrees.") == [
        "The bar is 3.5 m long, e.g. longer than a car.", "Dr. Smith agrees."]
    assert texts("Fruits, i.e. apples, are shown vs. pears. Done.") == [
        "Fruits, i.e. apples, are shown vs. pears.", "Done."]


def test_no_is_an_answer_unless_a_number_follows():
    assert texts("So, the answer is no. The circle is red. See No. 5 above.") == [
        "So, the answer is no.", "The circle is red.", "See No. 5 above."]


def test_quoted_answers_and_closing_quotes():
    assert texts("The sign says \"Stop.\" It is red. So, the answer is 'warm'.") == [
        "The sign says \"Stop.\"", "It is red.", "So, the answer is 'warm'."]


def test_list_markers_and_newlines():
    text = "1. The image shows a dog.\n2. The dog is brown.\n- So the answer is brown"
    assert texts(text) == ["1. The image shows a dog.", "2. The dog is brown.",
                           "- So the answer is brown"]


def test_culturalvqa_general_output_form():
    text = ("Thought: The image shows a typical West African meal. The solid appears to be fufu."
            "\n\nAnswer: So the answer is hot.")
    assert texts(text) == ["Thought: The image shows a typical West African meal.",
                           "The solid appears to be fufu.", "Answer: So the answer is hot."]


def test_lowercase_continuation_and_no_terminal_punctuation():
    assert texts("There are approx. ten cats. they sleep") == ["There are approx. ten cats. they sleep"]
    assert texts("") == []
    assert texts("   \n  ") == []


def test_spans_index_the_text():
    text = "  A red circle.  Two squares?\nYes!  "
    steps = split_steps(text)
    assert [(s.start, s.end) for s in steps] == [(2, 15), (17, 29), (30, 34)]
    assert all(text[s.start:s.end] == s.text for s in steps)
    assert [s.index for s in steps] == [0, 1, 2]


sentence_chars = st.sampled_from(list("abcXYZ 0123.,!?'\"\n()-e.g") + [" e.g. ", "3.5", "Dr. "])


@settings(max_examples=300, deadline=None)
@given(st.lists(sentence_chars, max_size=60).map("".join))
def test_spans_cover_text_in_order_without_overlap(text: str):
    steps = split_steps(text)
    cursor = 0
    for step in steps:
        assert step.start >= cursor, "steps overlap or go backwards"
        assert text[cursor:step.start].strip() == "", "non-whitespace text lost between steps"
        assert text[step.start:step.end] == step.text
        assert step.text == step.text.strip() and step.text
        cursor = step.end
    assert text[cursor:].strip() == ""
    # joining the spans reproduces every non-whitespace character, in order
    assert re.sub(r"\s", "", "".join(s.text for s in steps)) == re.sub(r"\s", "", text)


def test_align_steps_to_tokens_content_only():
    text = "A red circle, with total certainty. So the answer is red."
    steps = split_steps(text)
    steps[0].content_end = text.index(",")  # statement starts at the comma
    # whitespace-prefixed word tokens as a byte-level BPE would give, plus a zero-width special token
    offsets, pos = [], 0
    for word in text.split(" "):
        start = text.index(word, pos)
        offsets.append((max(0, start - 1) if start else 0, start + len(word)))
        pos = start + len(word)
    offsets.append((len(text), len(text)))
    align_steps_to_tokens(steps, offsets)
    # tokens: A, red, circle,, with, total, certainty., So, the, answer, is, red., <eos>
    assert (steps[0].token_start, steps[0].token_end) == (0, 3)
    assert (steps[1].token_start, steps[1].token_end) == (6, 11)


def test_align_step_without_tokens_gets_empty_span():
    steps = [Step(index=0, text="Hi.", start=0, end=3)]
    align_steps_to_tokens(steps, [])
    assert steps[0].token_start == steps[0].token_end == 0


def test_inline_enumerated_list_does_not_split_off_the_marker() -> None:
    """Issue #11: "2." alone was a step."""
    text = "1. The image shows a cake. 2. The cake says 30. So, the answer is thirty"
    assert [s.text for s in split_steps(text)] == [
        "1. The image shows a cake.", "2. The cake says 30.", "So, the answer is thirty"]


_LIST_ONLY = re.compile(r"^\(?(?:\d{1,3}|[A-Za-z])[.)]$")


@given(st.lists(st.sampled_from(["The cake is red.", "There are 2 dogs.", "It costs 3.5 dollars.",
                                 "Mr. Smith waves.", "So, the answer is 'warm'."]),
                min_size=1, max_size=5),
       st.sampled_from(["{n}. ", "{n}) ", "({n}) ", ""]), st.sampled_from([" ", "\n"]))
def test_numbered_chains_split_one_step_per_item(items: list[str], marker: str, sep: str) -> None:
    text = sep.join(marker.format(n=i + 1) + item for i, item in enumerate(items))
    steps = split_steps(text)
    assert [s.text for s in steps] == [marker.format(n=i + 1) + item for i, item in enumerate(items)]
    assert not any(_LIST_ONLY.match(s.text) for s in steps)
