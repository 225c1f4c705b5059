"""Step judges: the assertions judge on hand-made pairs per kind, its invariants, the NLI judge on
a tiny random cross-encoder and the LLM judge against a loopback server, both through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import typer
from fixtures_annotate.fake_server import FakeChatServer, Reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmboundary.judging.assertions import AssertionJudge, contradiction
from mmboundary.judging.base import JudgeItem, judge_names, make_judge
from mmboundary.judging.facts import read_facts
from mmboundary.judging.lexicon import load_lexicon, strip_suffix, tokenize
from mmboundary.judging.llm import parse_verdict
from mmboundary.judging.nli import NLIJudge, label_indices, make_tiny_nli

REPO = Path(__file__).resolve().parents[1]

# (reference step, candidate step): every candidate must be caught as wrong ...
FALSE_PAIRS = {
    "colour": ("The man holds a red umbrella.", "The man holds a blue umbrella."),
    "count": ("There are two dogs on the sofa.", "There are three dogs on the couch."),
    "number word vs digit": ("The cake shows the number 30.", "The cake shows the number forty."),
    "size": ("A large red umbrella shades the table.", "A small red umbrella shades the table."),
    "side": ("He holds the phone in his right hand.", "He holds the phone in his left hand."),
    "position": ("The cat sleeps under the table.", "The cat sleeps on top of the table."),
    "negation inserted": ("The street is wet.", "The street is not wet."),
    "negation removed": ("There is no snow on the ground.", "There is snow on the ground."),
    "object swap": ("A dog is chasing a ball.", "A cat is chasing a ball."),
    "relation swap": ("The girl is sitting on the bench.", "The girl is standing on the bench."),
    "antonym": ("The water looks clean.", "The water looks dirty."),
    "one vs several": ("Several boats float in the harbor.", "A single boat floats in the harbor."),
    "answer": ("So, the answer is thirty.", "So, the answer is ten."),
    "unrelated": ("The sky is clear and blue.", "A plate of pasta sits on the kitchen counter."),
}
# ... and every rewording kept as correct.
TRUE_PAIRS = {
    "article/tense": ("The man holds an umbrella.", "A man is holding an umbrella."),
    "digits vs words": ("There are two dogs on the sofa.", "There are 2 dogs on the couch."),
    "reordering": ("A red bus is parked next to the station.",
                   "Next to the station, a red bus is parked."),
    "synonym": ("The refrigerator is covered with photos.", "The fridge is covered with photos."),
    "negated antonym": ("The water is not clean.", "The water is dirty."),
    "ordinal": ("It is a 30th birthday party.", "It is a thirtieth birthday party."),
    "same text": ("So, the answer is thirty.", "So, the answer is thirty."),
    "answer as digits": ("So, the answer is thirty.", "So, the answer is 30."),
}


@pytest.fixture(scope="module")
def judge() -> AssertionJudge:
    return AssertionJudge()


def test_registry_knows_every_judge() -> None:
    assert {"assertions", "nli", "llm", "similarity", "exact"} <= set(judge_names())


@pytest.mark.parametrize("kind", sorted(FALSE_PAIRS))
def test_assertions_catches_each_kind(judge: AssertionJudge, kind: str) -> None:
    ref, pred = FALSE_PAIRS[kind]
    verdict = judge.judge([JudgeItem(pred, ref)])[0]
    assert not verdict.correct, (kind, verdict)
    assert verdict.score < 0.2 and verdict.reason


@pytest.mark.parametrize("kind", sorted(TRUE_PAIRS))
def test_assertions_keeps_paraphrases(judge: AssertionJudge, kind: str) -> None:
    ref, pred = TRUE_PAIRS[kind]
    verdict = judge.judge([JudgeItem(pred, ref)])[0]
    assert verdict.correct, (kind, verdict)
    assert verdict.score >= judge.topic_floor


def test_similarity_judge_misses_what_assertions_catches(judge: AssertionJudge) -> None:
    items = [JudgeItem(pred, ref) for ref, pred in FALSE_PAIRS.values()]
    similarity_wrong = sum(not v.correct for v in make_judge("similarity").judge(items))
    assertions_wrong = sum(not v.correct for v in judge.judge(items))
    assert assertions_wrong == len(items) and similarity_wrong <= 3


def test_facts_read_numbers_negation_scope_and_colours() -> None:
    lex = load_lexicon()
    assert read_facts("A 30th party in the 2000s for two kids", lex).numbers == {30, 2000, 2}
    assert read_facts("one of the dogs", lex).numbers == frozenset()
    facts = read_facts("The red and white bus is not moving.", lex)
    assert facts.colours == {(lex.canon("red"), "bus"), (lex.canon("white"), "bus")}
    assert len(facts.negations) == 1 and lex.canon("moving") in facts.negations[0]
    assert tokenize("isn't it?") == ["is", "n't", "it"]
    assert strip_suffix("holding") == strip_suffix("holds") == "hold"


def test_unrelated_negated_clause_is_not_a_polarity_flip() -> None:
    lex = load_lexicon()
    item = JudgeItem("The giraffes are wild because they are not in a zoo enclosure.",
                     "The giraffes are wild animals.")
    assert contradiction(item, lex) is None


_WORDS = ["man", "woman", "dog", "red", "blue", "large", "small", "left", "right", "two",
          "three", "not", "no", "table", "sitting", "standing", "holds", "umbrella", "the", "a",
          "is", "on", "under", "30", "thirty", "clean", "dirty", "Paris", "US"]
_sentences = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=10).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_sentences)
def test_a_step_compared_to_itself_is_never_contradicted(text: str) -> None:
    item = JudgeItem(text, text, reference=(text,), question=text)
    assert contradiction(item, load_lexicon()) is None


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(_sentences, _sentences), min_size=2, max_size=6),
       seed=st.integers(0, 1000))
def test_verdicts_do_not_depend_on_batch_order(judge: AssertionJudge, pairs: list, seed: int
                                               ) -> None:
    items = [JudgeItem(p, r) for p, r in pairs]
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    straight = judge.judge(items)
    shuffled = judge.judge([items[i] for i in order])
    assert [shuffled[order.index(i)] for i in range(len(items))] == straight
    assert all(v.correct for v in judge.judge([JudgeItem(r, r) for _, r in pairs]))


# ------------------------------------------------------------------------------- CLI helpers
def run_cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    from mmboundary.cli.judge import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "judge" a sub-group
    return CliRunner().invoke(app, ["judge", *args], env=env)


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"id": f"p{i}", "pred": p, "ref": r, "question": "What is it?",
                         "gold_answer": "a dog", "reference": [r, "So, the answer is a dog."]})
             for i, (p, r) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------- NLI
@pytest.fixture(scope="module")
def nli_models(tmp_path_factory) -> dict[str, Path]:
    order = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}  # not the builder's default
    base = tmp_path_factory.mktemp("nli")
    models = {"random": make_tiny_nli(base / "random", seed=0, id2label=order)}
    for label in ("entailment", "contradiction", "neutral"):
        models[label] = make_tiny_nli(base / label, seed=1, id2label=order, winner=label)
    return models


def test_nli_label_mapping_shapes_batching_determinism(nli_models: dict[str, Path]) -> None:
    assert label_indices({0: "entailment", 1: "neutral", 2: "contradiction"})["neutral"] == 1
    with pytest.raises(ValueError, match="id2label"):
        label_indices({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    judge = NLIJudge(nli_models["random"], batch_size=2)
    assert judge.labels == {"contradiction": 0, "neutral": 1, "entailment": 2}
    premises, hypotheses = ["a dog runs"] * 5, [f"a dog runs {i}" for i in range(5)]
    probs = judge.probabilities(premises, hypotheses)
    assert probs.shape == (5, 3) and probs.sum(axis=1) == pytest.approx(1.0)
    whole = NLIJudge(nli_models["random"], batch_size=32).probabilities(premises, hypotheses)
    assert whole == pytest.approx(probs, abs=1e-5)
    assert judge.probabilities(premises, hypotheses) == pytest.approx(probs)
    assert judge.probabilities([], []).shape == (0, 3)


@pytest.mark.parametrize(("winner", "correct"), [("entailment", True), ("contradiction", False),
                                                  ("neutral", False)])
def test_nli_verdict_follows_the_winning_label(nli_models: dict[str, Path], winner: str,
                                               correct: bool) -> None:
    verdicts = NLIJudge(nli_models[winner]).judge([JudgeItem("a cat", "a dog"),
                                                   JudgeItem("x", "y z")])
    assert [v.correct for v in verdicts] == [correct, correct]
    assert verdicts[0].score == pytest.approx(1.0 if correct else 0.0, abs=1e-3)


def test_nli_judge_from_the_cli(nli_models: dict[str, Path], tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", [("A dog runs.", "A dog is running."),
                                                  ("So, the answer is a cat.", "So, the answer is a dog.")])
    result = run_cli(["pairs", "--judge", "nli", "--model", str(nli_models["entailment"]),
                      "--pairs", str(pairs), "--out", str(tmp_path / "out.jsonl"),
                      "--set", "check_answer=true"])
    assert result.exit_code == 0, result.output
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == ["p0", "p1"] and all(r["correct"] for r in out)
    assert "p(entail)=1.000" in out[0]["reason"]


# ---------------------------------------------------------------------------------------- LLM
def llm_responder(body: dict[str, Any], n: int) -> Reply:
    text = body["messages"][0]["content"]
    step = text.split("Model's step:")[1].split("\n\n")[0].strip()
    if "purple" in step:
        return Reply(content="Well, it depends on the lighting.")
    return Reply(content="Incorrect." if "cat" in step else " **Correct** ")


def test_parse_verdict_is_strict() -> None:
    assert parse_verdict("correct") is True and parse_verdict('"INCORRECT".') is False
    for reply in ("", "correct, mostly", "yes", "The step is incorrect"):
        with pytest.raises(ValueError, match="field 'reply'"):
            parse_verdict(reply)


def test_llm_judge_from_the_cli_with_cache_and_errors(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", [("A dog runs.", "A dog is running."),
                                                  ("A cat runs.", "A dog is running."),
                                                  ("A purple dog runs.", "A dog is running.")])
    with FakeChatServer(llm_responder) as server:
        args = ["pairs", "--judge", "llm", "--model", "judge-model", "--base-url", server.url,
                "--api-key-env", "JUDGE_KEY", "--cache-dir", str(tmp_path / "cache"),
                "--pairs", str(pairs), "--out", str(tmp_path / "out.jsonl")]
        first = run_cli(args, env={"JUDGE_KEY": "sk-test-secret-123"})
        assert first.exit_code == 0, first.output
        assert len(server.requests) == 3
        assert server.auth_headers[0] == "Bearer sk-test-secret-123"
        body = server.requests[0]
        assert body["model"] == "judge-model" and body["temperature"] == 0
        assert "Reference step aligned" in body["messages"][0]["content"]
        again = run_cli(args, env={"JUDGE_KEY": "sk-test-secret-123"})
        assert again.exit_code == 0 and len(server.requests) == 4  # only the failed item again
    out = read_jsonl(tmp_path / "out.jsonl")
    assert out[0]["correct"] is True and out[1]["correct"] is False
    assert "correct" not in out[2] and "field 'reply'" in out[2]["error"]
    assert "pair p2" in first.output and "sk-test-secret-123" not in first.output


def test_llm_judge_all_unparseable_exits_1_and_judge_raises(tmp_path: Path) -> None:
    from mmboundary.judging.llm import JudgeReplyError, LLMJudge

    pairs = write_pairs(tmp_path / "pairs.jsonl", [("A purple dog.", "A dog.")])
    with FakeChatServer(llm_responder) as server:
        result = run_cli(["pairs", "--judge", "llm", "--model", "m", "--base-url", server.url,
                          "--pairs", str(pairs), "--out", str(tmp_path / "out.jsonl")], env={})
        judge = LLMJudge(model="m", base_url=server.url, max_workers=2)
        with pytest.raises(JudgeReplyError, match="item 1"):
            judge.judge([JudgeItem("A dog.", "A dog."), JudgeItem("A purple dog.", "A dog.")])
    assert result.exit_code == 1


# ---------------------------------------------------------------------------------- benchmark
def test_benchmark_cases_cover_every_kind_in_both_halves() -> None:
    from collections import Counter

    cases = read_jsonl(REPO / "benchmarks" / "judge_data" / "cases.jsonl")
    counts = Counter((c["split"], c["kind"]) for c in cases)
    hand = Counter(c["kind"] for c in cases if c["source"] == "hand")
    assert hand["paraphrase"] >= 60 and sum(hand.values()) - hand["paraphrase"] >= 60
    for split in ("dev", "test"):
        for kind in ("colour", "count", "size", "position", "negation", "object", "relation"):
            assert counts[(split, kind)] >= 40, (split, kind)
    by_question = {}
    for case in cases:
        assert by_question.setdefault(case["question_id"], case["split"]) == case["split"]


def test_bench_cli_on_a_small_case_file(tmp_path: Path, shared_data: Path) -> None:
    lines = (REPO / "benchmarks" / "judge_data" / "cases.jsonl").read_text().splitlines()
    small = tmp_path / "cases.jsonl"
    small.write_text("\n".join(lines[:40] + lines[-40:]) + "\n")
    result = run_cli(["bench", "--cases", str(small), "--data",
                      str(shared_data / "aokvqa_val_mmb.json"), "--judges", "exact",
                      "--split", "all", "--out", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    assert "| paraphrase |" in result.output and "both halves" in result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["results"]["exact"]["splits"]["all"]["paraphrase_kept"] == 0.0


@pytest.mark.parametrize(("pred", "ref", "wrong"), [
    ("The dish is an Ethiopian stew.", "The stew is a dish from Ethiopia.", False),
    ("The parade is a German custom.", "The parade is a custom in Germany.", False),
    ("The flag is the flag of Austria.", "The flag is the flag of Australia.", True),
    ("The can is a Pepsi can.", "The can is a Coca-Cola can.", True)])
def test_a_demonym_is_the_same_name(judge: AssertionJudge, pred: str, ref: str,
                                    wrong: bool) -> None:
    """Found on CulturalVQA after the benchmark was frozen: country / demonym pairs were most of
    the name rule's false alarms."""
    (verdict,) = judge.judge([JudgeItem(pred, ref)])
    assert (not verdict.correct) is wrong, verdict.reason
