"""Confidence-guided decoding (issue #17) on the shipped ShapesWorld VLM, and the selective
metrics: plain-equivalence and exact token cost, K tries per low step, abstention at the first
low step, determinism, statements vs internal confidence, the CLI, hand-worked metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmboundary.data.schema import Response, TokenStats
from mmboundary.evaluation.metrics import area_under_risk_coverage
from mmboundary.evaluation.selective import (
    accuracy_tokens_png,
    answered_accuracy,
    coverage,
    risk_coverage_curve,
    risk_coverage_png,
    selective_accuracy,
    summarize_guided,
)
from mmboundary.guidance import (
    Chunk,
    GuideConfig,
    InternalConfidence,
    StatedConfidence,
    completed_step_end,
    cut_step,
    guided_generate,
)

MAX_NEW = 96


@pytest.fixture(scope="module")
def world():
    """The shipped world VLM, 12 validation questions with images, their plain greedy
    generations, and the model's internal confidence (LNLP + MTE calibrator fitted on its own
    answers to 40 train questions)."""
    import torch

    from mmboundary.confidence import ConfidenceCalibrator, InternalConfidenceScorer
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, make_samples, shipped_world_model_path

    torch.set_num_threads(1)
    vlm = VLM.from_pretrained(shipped_world_model_path(), device="cpu", dtype="float32")
    samples = make_samples(12, seed=0, split="validation")
    images = [load_image(s) for s in samples]
    plain = vlm.generate(samples, images, max_new_tokens=MAX_NEW, batch_size=12)
    loader = lambda s: (load_image(s), s.id)  # noqa: E731
    scorer = InternalConfidenceScorer(vlm, ConfidenceCalibrator(estimators=("lnlp", "mte")),
                                      parse_statements=False, image_loader=loader, batch_size=32)
    scorer.fit_calibrator(make_samples(40, seed=0, split="train"), max_new_tokens=MAX_NEW)
    internal = InternalConfidence(scorer)
    levelled = guided_generate(vlm, samples, images, internal,
                               GuideConfig(below=1, max_new_tokens=MAX_NEW))
    return {"vlm": vlm, "samples": samples, "images": images, "plain": plain,
            "internal": internal, "levelled": levelled, "scorer": scorer}


def _run(world, config: GuideConfig, source=None, seed: int | None = 0) -> list[Response]:
    return guided_generate(world["vlm"], world["samples"], world["images"],
                           source or world["internal"], config, seed=seed)


# ------------------------------------------------------------------------------ step cutting
def test_a_step_ends_once_the_next_has_begun(world) -> None:
    assert completed_step_end("There are 3.") is None  # might still become "3.5"
    assert completed_step_end("There are 3.5 red") is None
    assert completed_step_end("The answer is no. it") is None  # lowercase continuation
    assert completed_step_end("There are 3. So") == 12
    tok = world["vlm"].tokenizer
    ids = tok("There is a red circle. There", add_special_tokens=False)["input_ids"]
    chunk = Chunk(ids, [-0.1 * i for i in range(len(ids))], [0.0] * len(ids), finished=False)
    step, rest = cut_step(tok, chunk)
    assert tok.decode(step.ids) == "There is a red circle."
    assert tok.decode(rest.ids) == " There" and step.ids + rest.ids == ids
    assert step.logprobs + rest.logprobs == chunk.logprobs
    assert cut_step(tok, Chunk(ids[:-2]))[1] is None


# ------------------------------------------------------------------------------ compute
def test_nothing_below_level_1_is_plain_decoding_at_its_token_cost(world) -> None:
    for guided, plain in zip(world["levelled"], world["plain"], strict=True):
        assert guided.text == plain.text
        assert guided.token_stats.token_ids == plain.token_stats.token_ids
        assert guided.token_stats.logprobs == pytest.approx(plain.token_stats.logprobs, abs=1e-4)
        assert guided.meta["tokens_generated"] == len(plain.token_stats.token_ids)
        assert guided.meta["tries_used"] == guided.meta["steps_resampled"] == 0
        assert guided.meta["finished"] == plain.finished
        assert len(guided.meta["step_levels"]) >= 2


def test_a_question_without_a_low_step_costs_exactly_plain(world) -> None:
    """In a batch where other questions are resampled, a question whose steps are all at or
    above the level is the plain chain at the plain token count."""
    below = 3
    mins = [min(r.meta["step_levels"]) for r in world["levelled"]]
    assert any(m >= below for m in mins) and any(m < below for m in mins)
    guided = _run(world, GuideConfig(below=below, tries=2, max_new_tokens=MAX_NEW))
    for g, plain, low in zip(guided, world["plain"], mins, strict=True):
        if low >= below:
            assert g.meta["steps_resampled"] == 0 and g.text == plain.text
            assert g.meta["tokens_generated"] == len(plain.token_stats.token_ids)
        else:
            assert g.meta["steps_resampled"] >= 1
            assert g.meta["tokens_generated"] > len(g.token_stats.token_ids)
        assert g.meta["tries_used"] == 2 * g.meta["steps_resampled"]


def test_below_6_resamples_every_step_with_k_tries(world) -> None:
    k = 3
    guided = _run(world, GuideConfig(below=6, tries=k, max_new_tokens=MAX_NEW))
    for g in guided:
        steps = len(g.meta["step_levels"])
        assert steps >= 2 and g.meta["steps_resampled"] == steps
        assert g.meta["tries_used"] == k * steps and g.meta["guide_tries"] == k
        assert g.meta["tokens_generated"] > len(g.token_stats.token_ids)
        assert g.text and not g.meta["abstained"]


def test_same_seed_same_chains(world) -> None:
    config = GuideConfig(below=6, tries=2, max_new_tokens=MAX_NEW, temperature=1.5)
    first, again = _run(world, config, seed=7), _run(world, config, seed=7)
    assert [r.text for r in first] == [r.text for r in again]
    assert [r.meta for r in first] == [r.meta for r in again]
    other = _run(world, config, seed=8)
    assert [r.text for r in other] != [r.text for r in first]


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava", "idefics3"])
def test_every_tiny_architecture(tiny_model_dir, arch: str) -> None:
    """Continuation from token ids works for each architecture (Qwen2-VL's mm_token_type_ids,
    Idefics3's image splitting): plain-equivalent at below=1, K tries per step at below=6."""
    from mmboundary.models.vlm import VLM
    from mmboundary.shapesworld.scenes import load_image, make_samples

    vlm = VLM.from_pretrained(tiny_model_dir(arch), device="cpu")
    samples = make_samples(3, seed=1)
    images = [load_image(s) for s in samples]
    plain = vlm.generate(samples, images, max_new_tokens=16, batch_size=3)
    source = StatedConfidence(vlm.tokenizer)
    same = guided_generate(vlm, samples, images, source, GuideConfig(below=1, max_new_tokens=16))
    for g, p in zip(same, plain, strict=True):
        assert g.token_stats.token_ids == p.token_stats.token_ids
        assert g.meta["tokens_generated"] == len(p.token_stats.token_ids)
    every = guided_generate(vlm, samples, images, source,
                            GuideConfig(below=6, tries=2, max_new_tokens=16), seed=0)
    assert all(r.meta["tries_used"] == 2 * len(r.meta["step_levels"]) >= 2 for r in every)


# ------------------------------------------------------------------------------ abstention
def test_abstention_stops_at_the_first_low_step(world) -> None:
    from mmboundary.text.steps import split_steps

    below = 3
    guided = _run(world, GuideConfig(guide="abstain", below=below, max_new_tokens=MAX_NEW))
    for g, ref, plain in zip(guided, world["levelled"], world["plain"], strict=True):
        levels = ref.meta["step_levels"]
        first_low = next((i for i, lv in enumerate(levels) if lv < below), None)
        assert g.meta["abstained"] == (first_low is not None)
        if first_low is None:
            assert g.text == plain.text and g.meta["tokens_generated"] == len(
                plain.token_stats.token_ids)
            continue
        steps = split_steps(plain.text)
        kept = " ".join(s.text for s in steps[:first_low])
        assert g.text == f"{kept} I am not sure.".lstrip()
        assert g.meta["abstained_step"] == steps[first_low].text
        assert g.meta["abstained_level"] == levels[first_low]
        assert g.meta["step_levels"] == levels[:first_low]
        n_kept = len(g.token_stats.token_ids)
        assert g.token_stats.token_ids == plain.token_stats.token_ids[:n_kept]
        assert n_kept < g.meta["tokens_generated"] <= len(plain.token_stats.token_ids)
    # abstaining below L answers exactly the chains whose lowest step level is >= L
    mins = [min(r.meta["step_levels"]) for r in world["levelled"]]
    assert coverage([not g.meta["abstained"] for g in guided]) == np.mean(
        [m >= below for m in mins])


# ------------------------------------------------------------------------------ sources
def test_stated_confidence_reads_statements(world) -> None:
    tok = world["vlm"].tokenizer
    texts = ["There are two red shapes, but I can't be entirely sure.",
             " There is a red circle, with total certainty.", "There is a red circle."]
    chunks = [Chunk(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    judged = StatedConfidence(tok, missing_level=2).judge([None] * 3, [None] * 3, chunks)
    assert [(j.level, j.value, j.known) for j in judged] == [(3, 0.5, True), (5, 0.9, True),
                                                             (2, 0.3, False)]


def test_a_model_without_statements_is_judged_at_the_missing_level(world) -> None:
    """The vanilla world VLM states nothing: every step counts as level 3 (default)."""
    stated = StatedConfidence(world["vlm"].tokenizer)
    kept = _run(world, GuideConfig(below=3, max_new_tokens=MAX_NEW), source=stated)
    assert [r.text for r in kept] == [p.text for p in world["plain"]]
    assert all(set(r.meta["step_levels"]) == {3} for r in kept)
    assert all(r.meta["steps_without_confidence"] == len(r.meta["step_levels"]) for r in kept)
    resampled = _run(world, GuideConfig(below=4, tries=1, max_new_tokens=MAX_NEW),
                     source=stated)
    assert all(r.meta["steps_resampled"] == len(r.meta["step_levels"]) for r in resampled)


def test_internal_confidence_of_a_step_equals_its_score_in_the_whole_response(world) -> None:
    """A step judged alone (its generation statistics) gets the level the scorer gives it
    inside the whole plain response."""
    scorer = world["scorer"]
    whole = scorer.score(world["samples"], [Response(sample_id=s.id, text=p.text,
                                                     token_stats=p.token_stats)
                                            for s, p in zip(world["samples"], world["plain"],
                                                            strict=True)])
    for ref, scored in zip(world["levelled"], whole, strict=True):
        assert ref.meta["step_levels"] == [s.level for s in scored.steps]


def test_guide_config_checks_its_fields() -> None:
    for bad, match in [(dict(below=0), "below"), (dict(tries=0), "tries"),
                       (dict(guide="retry"), "guide"), (dict(top_p=0.0), "top_p")]:
        with pytest.raises(ValueError, match=f"GuideConfig.{match}"):
            GuideConfig(**bad)


# ------------------------------------------------------------------------------ CLI
def test_cli_generate_guided(world, tmp_path) -> None:
    from typer.testing import CliRunner

    from mmboundary.cli import app
    from mmboundary.shapesworld.scenes import shipped_world_model_path, write_split

    split = write_split(tmp_path / "shapes", 3, "validation")
    calibrator = world["scorer"].calibrator.save(tmp_path / "cal.json")
    base = ["generate", "--model", str(shipped_world_model_path()), "--data", str(split),
            "--dataset", "shapes", "--max-new-tokens", str(MAX_NEW), "--device", "cpu"]
    out = tmp_path / "abstain.jsonl"
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--guide", "abstain",
                                      "--below", "6"])
    assert result.exit_code == 0, result.output
    assert "no step stated a confidence" in result.output  # no --calibrator, no statements
    lines = [Response.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [r.text for r in lines] == ["I am not sure."] * 3
    assert all(r.meta["abstained"] and r.meta["guide"] == "abstain" for r in lines)
    out = tmp_path / "resample.jsonl"
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--guide", "resample",
                                      "--below", "6", "--tries", "2", "--calibrator",
                                      str(calibrator), "--no-statements"])
    assert result.exit_code == 0, result.output
    lines = [Response.model_validate_json(line) for line in out.read_text().splitlines()]
    assert all(r.meta["tries_used"] == 2 * len(r.meta["step_levels"]) for r in lines)
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x.jsonl"), "--calibrator",
                                   str(calibrator)])
    assert bad.exit_code == 2 and "--guide resample|abstain only" in bad.output


# ------------------------------------------------------------------------------ metrics
def _response(abstained: bool, tokens: int, error: bool = False) -> Response:
    meta = {"guide": "abstain", "guide_below": 3, "guide_tries": 0, "abstained": abstained,
            "tokens_generated": tokens, "tries_used": 0, "steps_resampled": 0}
    if error:
        meta = {"error": "boom"}
    return Response(sample_id="s", text="x", meta=meta)


def test_selective_metrics_by_hand() -> None:
    correct, answered = [1, 0, 1, 1, 0], [True, True, False, True, False]
    assert coverage(answered) == 0.6
    assert selective_accuracy(correct, answered) == pytest.approx(2 / 3)
    assert answered_accuracy(correct, answered) == pytest.approx(2 / 5)
    assert selective_accuracy([1], [False]) is None and coverage([]) is None
    # scores 0.9 0.4 0.4 0.2, correct 1 0 1 0: coverage 1/4, 3/4, 1; risk 0, 1/3, 1/2
    curve = risk_coverage_curve([0.4, 0.9, 0.2, 0.4], [0, 1, 0, 1])
    assert curve.thresholds == [0.9, 0.4, 0.2]
    assert curve.coverage == [0.25, 0.75, 1.0]
    assert curve.risk == pytest.approx([0.0, 1 / 3, 0.5])
    assert curve.area() == pytest.approx((0 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    assert curve.area() == pytest.approx(area_under_risk_coverage([0.4, 0.9, 0.2, 0.4],
                                                                  [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="2 correctness values but 3"):
        selective_accuracy([1, 0], [True, True, False])


def test_summarize_guided_and_plots() -> None:
    responses = [_response(False, 10), _response(True, 4), _response(False, 13),
                 _response(False, 99, error=True)]
    plain = Response(sample_id="p", text="x", token_stats=TokenStats(
        token_ids=[1, 2, 3], logprobs=[0.0] * 3, entropies=[0.0] * 3, offsets=[(0, 1)] * 3))
    summary = summarize_guided(responses, [1, 1, 0, 1], label="L=3")
    assert (summary.n, summary.failed, summary.answered) == (3, 1, 2)
    assert summary.coverage == pytest.approx(2 / 3)
    assert summary.accuracy == pytest.approx(1 / 3)  # the abstention's "correct" counts 0
    assert summary.selective_accuracy == pytest.approx(1 / 2)
    assert summary.tokens == pytest.approx(9.0) and summary.below == 3
    assert summarize_guided([plain], [1]).tokens == 3.0
    assert math.isclose(summarize_guided([plain], [1]).coverage, 1.0)
    curve = risk_coverage_curve([0.9, 0.5, 0.1], [1, 0, 1])
    assert risk_coverage_png([summary], curve).startswith(b"\x89PNG")
    assert accuracy_tokens_png([summary], summary).startswith(b"\x89PNG")
