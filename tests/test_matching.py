"""Answer correctness, chain F1 and dataset evaluation (alignment and the rule set: test_rules)."""

from __future__ import annotations

import doctest
import re

import pytest
from toys import Jaccard

from mmboundary.data.schema import ReferenceChain, Response, Sample, extract_answer
from mmboundary.evaluation.evaluate import (
    EvalConfig,
    EvalResult,
    evaluate_predictions,
    general_output_responses,
    response_from_general_output,
)
from mmboundary.evaluation.metrics import chain_scores
from mmboundary.judging.rules import RuleConfig
from mmboundary.text import matching
from mmboundary.text.matching import (
    judge_answer,
    match_choice,
    normalize_vqa_answer,
    vqa_soft_accuracy,
)

SIM = Jaccard()


def test_doctests() -> None:
    assert doctest.testmod(matching).failed == 0


def toy_config(tau: float = 0.6) -> EvalConfig:
    """The similarity judge with a Jaccard toy similarity, no bootstrap (hand-worked numbers)."""
    return EvalConfig(rules=RuleConfig(judge="similarity", tau=tau), bootstrap=0)


def test_chain_scores_hand_worked() -> None:
    # 3 predicted, 4 reference, 2 correct pairs: P = 2/3, R = 1/2, F1 = 4/7.
    scores = chain_scores(2, 3, 4)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(0.5)
    assert scores.f1 == pytest.approx(4 / 7)
    empty = chain_scores(0, 0, 1)
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="reference chain is empty"):
        chain_scores(0, 1, 0)


@pytest.mark.parametrize(("text", "answer"), [
    ("Answer: So the answer is hot.", "hot"),
    ("So, the answer is 'warm'.", "warm"),
    ("So the answer is (B).", "(B)"),
    ("So, the answer is B", "B"),
])
def test_extract_answer_real_variants(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


def test_vqa_normalisation_and_soft_accuracy() -> None:
    assert normalize_vqa_answer("The Dog.") == "dog"
    assert normalize_vqa_answer("Two!") == "2"
    assert normalize_vqa_answer("'warm'") == "warm"
    assert normalize_vqa_answer("dont know") == "don't know"
    direct = ["thirty", "30th", "thirty", "thirty", "30", "thirty", "thirty", "30th", "2", "two"]
    assert vqa_soft_accuracy("Thirty.", direct) == 1.0
    assert vqa_soft_accuracy("30th", direct) == pytest.approx(2 / 3)
    assert vqa_soft_accuracy("two", direct) == pytest.approx(2 / 3)  # "2" and "two" both count
    assert vqa_soft_accuracy("forty", direct) == 0.0
    with pytest.raises(ValueError, match="direct answers"):
        vqa_soft_accuracy("x", [])


def test_match_choice() -> None:
    choices = ["one", "ten", "nine", "thirty"]
    assert match_choice("(B)", choices) == (1, "letter")
    assert match_choice("D", choices) == (3, "letter")
    assert match_choice("B. nine", choices) == (2, "exact")  # the text wins over the letter
    assert match_choice("Thirty", choices) == (3, "exact")
    assert match_choice("A ten", choices) == (1, "exact")  # "A" is an article, not a letter
    assert match_choice("A ten candles", choices) == (None, "none")
    # Jaccard: "ten" 1/3, others 0 -> margin 1/3 but below tau 0.5: no choice (strict judge)
    assert match_choice("A ten candles", choices, SIM) == (None, "none")
    assert match_choice("A ten candles", choices, SIM, tau=0.3) == (1, "similarity")
    assert match_choice("thirty candles", choices, SIM, tau=0.5) == (3, "similarity")
    # a tie between two choices fails the margin
    assert match_choice("ten nine", ["ten", "nine"], SIM, tau=0.3) == (None, "none")
    assert match_choice("thirty candles", choices) == (None, "none")


def _sample(**kw) -> Sample:
    base = {"id": "s1", "dataset": "test", "question": "Which birthday?"}
    return Sample(**{**base, **kw})


def test_judge_answer_modes() -> None:
    mc = _sample(choices=["one", "ten", "nine", "thirty"], correct_choice_idx=3,
                 direct_answers=["thirty"] * 2 + ["30"] * 8)
    assert judge_answer(mc, "(D)", SIM).score == 1.0
    assert judge_answer(mc, "nine", SIM).score == 0.0
    assert judge_answer(mc, "30", SIM, mode="vqa").score == 1.0
    assert judge_answer(mc, "thirty", SIM, mode="vqa").score == pytest.approx(2 / 3)
    assert judge_answer(mc, None, SIM).method == "no answer"
    chain = ReferenceChain(reasoning_level=["Fufu is eaten warm.", "So, the answer is 'warm'."])
    open_q = _sample(reference=chain)
    assert judge_answer(open_q, "Warm", SIM).method == "exact"
    judged = judge_answer(open_q, "warm food", SIM, answer_tau=0.5)
    assert (judged.score, judged.similarity) == (1.0, 0.5)
    assert judge_answer(open_q, "hot", SIM).score == 0.0
    with pytest.raises(ValueError, match="no gold answer"):
        judge_answer(_sample(), "x", SIM)


def _evaluation_fixture() -> tuple[list[Sample], list[Response]]:
    chain = ReferenceChain(image_level=["The cake has the number 30 on it."],
                           reasoning_level=["Candles mean a birthday.", "So, the answer is thirty."])
    samples = [_sample(id=f"s{i}", choices=["one", "ten", "nine", "thirty"], correct_choice_idx=3,
                       reference=chain) for i in range(3)]
    responses = [
        Response(sample_id="s0", text="The cake has the number 30 on it (confidence 0.9). "
                 "So, the answer is thirty (confidence 0.8)."),
        Response(sample_id="s1", text="The cake has the number 10 on it (confidence 0.6). "
                 "Candles mean a birthday (confidence 0.7). So, the answer is ten (confidence 0.7)."),
        Response(sample_id="s2", text="A dog runs. So, the answer is nine."),
    ]
    return samples, responses


def test_evaluate_predictions_hand_worked() -> None:
    samples, responses = _evaluation_fixture()
    result = evaluate_predictions(samples, responses, SIM, system="toy", config=toy_config())
    s0, s1, s2 = result.samples
    assert [s.answer for s in result.samples] == ["thirty", "ten", "nine"]
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)
    assert (s0.response_confidence, s1.response_confidence, s2.response_confidence) == (0.8, 0.7, None)
    # s0: both steps aligned and correct -> P 1, R 2/3; s1: "number 10" step Jaccard 6/8 >= 0.6
    # (correct by tau), birthday step exact, answer step wrong by its answer -> P 2/3, R 2/3;
    # s2: only the answer step is right in form but wrong in answer, "A dog runs" wrong -> 0.
    assert (s0.precision, s0.recall) == (1.0, pytest.approx(2 / 3))
    assert [t.correct for t in s1.steps] == [True, True, False]
    assert s1.f1 == pytest.approx(2 / 3)
    assert s2.f1 == 0.0
    assert result.metrics["f1"] == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)
    # ECE over the two responses with confidence: 0.8 correct (gap 0.2), 0.7 wrong (gap 0.7).
    assert result.metrics["ece"] == pytest.approx((0.2 + 0.7) / 2)
    # MECE over the 5 aligned steps with confidence: 0.9 T, 0.8 T, 0.6 T, 0.7 T, 0.7 F.
    assert result.metrics["mece"] == pytest.approx((0.1 + 0.2 + 0.4 + 2 * 0.2) / 5)
    assert result.counts["with_response_confidence"] == 2
    roundtrip = EvalResult.from_dict(result.to_dict())
    assert roundtrip.metrics == result.metrics and roundtrip.samples[1].steps == s1.steps


def test_evaluate_without_confidences_reports_unavailable() -> None:
    samples, responses = _evaluation_fixture()
    plain = [Response(sample_id=r.sample_id, text=re.sub(r" \(confidence [\d.]+\)", "", r.text))
             for r in responses]
    result = evaluate_predictions(samples, plain, SIM, config=toy_config())
    assert result.metrics["ece"] is None and result.metrics["mece"] is None
    assert "no response" in result.unavailable["ece"]
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)


def test_evaluate_rejects_unknown_and_duplicate_responses() -> None:
    samples, responses = _evaluation_fixture()
    with pytest.raises(ValueError, match="'nope' is not in the dataset"):
        evaluate_predictions(samples, [Response(sample_id="nope", text="x")], SIM)
    with pytest.raises(ValueError, match="second response for sample 's0'"):
        evaluate_predictions(samples, [responses[0], responses[0]], SIM)
    failed = Response(sample_id="s2", text="", meta={"error": "timeout"})
    result = evaluate_predictions(samples, [responses[0], failed], SIM, config=toy_config())
    assert (result.counts["failed"], result.counts["missing"], result.counts["evaluated"]) == (1, 1, 1)


def test_general_output_adapter() -> None:
    r = response_from_general_output("7", "Thought: The bowl holds fufu. It is eaten hot.\n\n"
                                          "Answer: So the answer is hot.")
    assert [s.text for s in r.steps] == ["The bowl holds fufu.", "It is eaten hot.",
                                         "So the answer is hot."]
    assert r.text.startswith("The bowl")


@pytest.fixture(scope="module")
def minilm():
    import torch

    from mmboundary.models.similarity import default_similarity

    torch.set_num_threads(1)
    return default_similarity()


def test_culturalvqa_general_output_against_keys_filtered(shared_data, minilm) -> None:
    """The authors' own general_output answers vs their filtered chains (first 200 records; the
    full 800 are in examples/evaluate_culturalvqa_general_output.py)."""
    from mmboundary.data.loaders import load_annotated

    samples = load_annotated(shared_data / "culturalvqa_mmb.json").samples[:200]
    result = evaluate_predictions(samples, general_output_responses(samples), minilm,
                                  system="general_output", config=None)
    assert result.counts["evaluated"] == 200
    assert 0.75 <= result.metrics["accuracy"] <= 0.98
    assert 0.65 <= result.metrics["f1"] <= 0.95
    assert result.metrics["ece"] is None and "expressed confidence" in result.unavailable["ece"]


def test_shapes_samples_judge_answers_and_steps_exactly():
    from mmboundary.shapesworld.scenes import make_samples

    open_sample = next(s for s in make_samples(40, seed=0, split="test") if s.choices is None)
    assert open_sample.answer_mode == "exact" and open_sample.step_match == "exact"
    gold = open_sample.gold_answer
    wrong = "3" if gold != "3" else "2"
    assert matching.judge_answer(open_sample, gold, None).score == 1.0
    assert matching.judge_answer(open_sample, wrong, None).score == 0.0
